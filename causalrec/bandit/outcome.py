"""The cross-fitted outcome model q(x, a) of ``BanditEstimator`` (dr / dm): one pooled GLM per
fold on the blocked layout, predictions for every item one chunk of rows at a time."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..estimate.design import build_design
from ..estimate.nuisance import warn_unconverged
from ..glm import BlockedDesign, SegmentGLM
from ..glm.layout import chunk_bytes, resolve_dtype
from ..schema import InteractionLog


class OutcomeModel:
    """Mixed into ``BanditEstimator``, whose ``fit`` sets the rows (``_a``, ``_k``, ``_y``,
    ``fold_``, ``items_``, ``positions_``) before calling ``_fit_outcome_model``."""

    def _fit_outcome_model(self, log: InteractionLog) -> None:
        df = log.data
        extra = None
        if self.position_ is not None and self.outcome_segments == "item":
            extra = pd.get_dummies(df[self.position_].astype(str), prefix=self.position_,
                                   drop_first=True, dtype=float)
        design = build_design(log, extra, max_levels=self.max_levels, dtype=np.float64)
        self.design_columns_ = design.columns
        dtype = resolve_dtype(self.dtype)
        self._X = torch.as_tensor(design.X, dtype=dtype, device=self._device)
        by_pos = self.outcome_segments == "item_position" and self.position_ is not None
        self._n_pos_seg = len(self.positions_) if by_pos else 1
        n_seg = len(self.items_) * self._n_pos_seg
        seg = self._a * self._n_pos_seg + (self._k if by_pos else 0)
        family = "logistic" if self.outcome_binary_ else "gaussian"
        folds, F = self.fold_.to_numpy(), self.n_folds
        # one blocked layout for all folds (cells = segment x fold), as the effect estimator does
        design = BlockedDesign(self._X, seg * F + folds, n_seg * F,
                               cell_segment=np.repeat(np.arange(n_seg), F))
        yb = design.pad(self._y)
        block_fold = design.block_cell % F
        # Item intercepts are shrunk toward the shared one, which then is well identified: give it
        # the same weak ridge as the shared slopes (a N(0, 1) prior would pull a rare-click
        # model's base rate toward 50%).
        model = SegmentGLM(family=family, pooled=True, shrinkage=self.shrinkage,
                           intercept_penalty=self.intercept_shrinkage,
                           shared_intercept_penalty=1e-4, max_iter=self.max_iter, tol=1e-6,
                           device=self._device, dtype=dtype)
        self.outcome_coef_, converged = [], np.ones(n_seg, dtype=bool)
        for f in range(F):
            train = design.blocks(block_fold != f if F > 1 else block_fold >= 0)
            fit = model.clone().fit_blocks(design, yb, train, n_segments=n_seg)
            self.outcome_coef_.append(fit.fit_.coef)
            converged &= fit.converged_
        self.outcome_converged_ = bool(converged.all())
        names = np.repeat(self.items_, self._n_pos_seg).astype(str)
        if self._n_pos_seg > 1:
            names = np.char.add(names, np.char.add(" @ ", np.tile(self.positions_.astype(str), len(self.items_))))
        warn_unconverged(converged, names, "bandit outcome model")
        self._family = family
        self._fold_t = torch.as_tensor(folds.copy(), device=self._device)
        self._k_t = torch.as_tensor(self._k, device=self._device)
        self._a_t = torch.as_tensor(self._a, device=self._device)

    def _rows_per_chunk(self) -> int:
        if self.chunk_rows is not None:
            return int(self.chunk_rows)
        per_row = 8 * len(self.items_) * self._n_pos_seg * 6  # a few float64 row x item temporaries
        return max(1, chunk_bytes(self._device) // per_row)

    def _predict(self, rows: torch.Tensor) -> torch.Tensor:
        """q(x_i, a) for the given rows and every item, (len(rows), n_items) float64,
        each row predicted by the model that did not see its fold."""
        n_items = len(self.items_)
        out = torch.empty(len(rows), n_items, dtype=torch.float64, device=self._device)
        for f, coef in enumerate(self.outcome_coef_):
            mine = self._fold_t[rows] == f if self.n_folds > 1 else torch.ones_like(rows, dtype=torch.bool)
            r = rows[mine]
            eta = self._X[r] @ coef[:, 1:].T + coef[:, 0]
            if self._n_pos_seg > 1:  # pick each row's own position
                eta = eta.view(len(r), n_items, self._n_pos_seg)
                eta = eta.gather(2, self._k_t[r].view(-1, 1, 1).expand(-1, n_items, 1)).squeeze(2)
            mean = torch.sigmoid(eta) if self._family == "logistic" else eta
            out[mine] = mean.to(torch.float64)
        return out

    def _chunks(self, use_model: bool = True):
        """Row chunks with each row's predictions for every item (None without the model)."""
        n = len(self._y)
        step = self._rows_per_chunk()
        for start in range(0, n, step):
            rows = torch.arange(start, min(n, start + step), device=self._device)
            yield rows, (self._predict(rows) if use_model else None)

    def _observed_q(self) -> np.ndarray:
        """q(x_i, a_i) for the shown item of every row (computed once)."""
        if self._q_obs is None:
            q = np.empty(len(self._y))
            for rows, q_rows in self._chunks():
                shown = q_rows.gather(1, self._a_t[rows].view(-1, 1)).squeeze(1)
                q[rows.cpu().numpy()] = shown.cpu().numpy()
            self._q_obs = q
        return self._q_obs
