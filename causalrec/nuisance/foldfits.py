"""The fold-by-fold fits behind ``cross_fit_nuisances``: the offset GLM, the pooled learner
and the items' own learners, for one nuisance (e, mu0 or mu1) or for both outcome arms at
once (the joint outcome model).

Rows arrive sorted by item (then by a content key), so each item's rows are one slice of
any row subset; early-stopping rows are drawn from ``key`` (whole units when the log has
them), so neither depends on the caller's row order.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import cached_property

import numpy as np
import torch

from ..glm import BlockedDesign, SegmentGLM
from ..glm.passes import block_grams
from .select import row_loss

__all__ = ["FoldFits", "logit", "standardised"]

# the most values (rows x columns over the folds) the propensity's matrices may keep for the
# joint outcome model: ~5 bytes a value (float32 and its histogram bin), ~170 MB
SHARED_MATRIX_VALUES = 2 ** 25


def standardised(X, device, chunk=65_536):
    """Standardised columns for the GLM. Moments of the content-ordered rows, summed in
    float64 over row chunks (no float64 copy of X): the design's own moments are summed in
    the caller's row order, which would make results depend on it at float32 rounding."""
    Xt = torch.as_tensor(np.ascontiguousarray(X))
    n, d = Xt.shape
    if d == 0 or n == 0:
        return Xt.to(device)
    chunks = [Xt[a:a + chunk].to(torch.float64) for a in range(0, n, chunk)]
    center = sum(c.sum(0) for c in chunks) / n
    std = (sum(((c - center) ** 2).sum(0) for c in chunks) / n).sqrt()
    scale = torch.where(std > 0, 1.0 / std, 1.0)
    Xt = Xt.to(device)
    return (Xt - center.to(Xt)) * scale.to(Xt)


def logit(p, eps):
    """log(p / (1 - p)), p first kept ``eps`` from 0 and 1."""
    p = np.clip(p, eps, 1 - eps)
    return np.log(p) - np.log1p(-p)


def fits_joint_outcome(learner) -> bool:
    """Whether a learner also fits the joint outcome model (both arms, the arm a feature):
    tree learners can split on the arm; a per-item learner (factorised) is per arm already."""
    return getattr(learner, "own_item_models", True) and getattr(learner, "joint_outcome", True)


class FoldFits:
    """The data of one cross-fit and the fits of one nuisance over the folds."""

    def __init__(self, X, Xs, item, t, folds, n_items, key, spec, glm, seed, device,
                 refit=False, item_code=None):
        self.X, self.Xs, self.item, self.t, self.folds = X, Xs, item, t, folds
        # the deviations' ridges to try beside the GLM's own (``glm_etas``), apart from the
        # GLM's settings
        glm = dict(glm)
        self.shrinkage_grid = glm.pop("shrinkage_grid", ())
        self.n_items, self.key, self.spec, self.glm = n_items, key, spec, glm
        self.seed, self.device = seed, device
        self.n_folds = int(folds.max()) + 1 if len(folds) else 1
        # the pooled booster's item category: ``item_code`` per item (its rank by content,
        # so relabelling the items changes nothing), else the item index
        self.item_category = (item if item_code is None else item_code[item]).astype(X.dtype)
        self.Xp = np.column_stack([X, self.item_category]) if spec.item_feature else X
        self.glm_n_iter, self.glm_converged = [], []
        self.etas = {}  # (arm, fold) -> the outcome GLM's linear predictor: the joint offsets
        self.shared_penalties = {}  # nuisance -> the offset GLM's tuned shared-slope penalty
        self.shrinkages = {}  # nuisance -> its tuned deviations' ridge (``shrinkage_grid``)
        self.refit = refit and self.n_folds > 1
        self.eta_gap = {}  # nuisance -> all-rows GLM eta minus the out-of-fold one (refit)
        self.loo_gap = {}  # the same with the all-rows GLM's leave-one-out eta (variance)
        self.matrices = None  # (fold, item or None) -> matrices shared by e and the joint model

    @cached_property
    def with_t(self):
        """The joint outcome model's columns: X and the arm."""
        return np.column_stack([self.X, self.t.astype(self.X.dtype)])

    @cached_property
    def with_t_pooled(self):
        """``with_t`` and, for the pooled booster, the item code (a category)."""
        return (np.column_stack([self.with_t, self.item_category])
                if self.spec.item_feature else self.with_t)

    def share_matrices(self, propensity, outcome) -> None:
        """Let the propensity's fits leave their training matrices to the joint outcome
        model's on the same rows (the arm a column of both, skipped by the propensity's
        trees): XGBoost's quantile sketch, most of a small booster's time, is then made once
        for both (ACIC stacked: 20 sketches instead of 40). Only for learners that can
        (``BoostedLearner.shares_matrices``) and while the kept matrices hold at most
        ``SHARED_MATRIX_VALUES`` values."""
        n, d = len(self.X), self.X.shape[1] + 2
        if (hasattr(propensity, "shares_matrices") and propensity.shares_matrices(outcome)
                and n * max(self.n_folds - 1, 1) * d <= SHARED_MATRIX_VALUES):
            self.matrices = {}

    def _slot(self, fold, j, release):
        """The shared matrices of ``fold``'s training rows of item ``j`` (None: the pooled
        fit's rows); ``release``: their last use, dropped."""
        key = (fold, j)
        return self.matrices.pop(key, {}) if release else self.matrices.setdefault(key, {})

    def split(self, f):
        """(test, train) masks of fold f (one fold: every row is both)."""
        n = len(self.item)
        if self.n_folds == 1:
            return np.ones(n, bool), np.ones(n, bool)
        test = self.folds == f
        return test, ~test

    def glm_etas(self, target, arm, family, name, tune=True):
        """Per fold, the offset GLM's linear predictor for all rows. Where the shared slopes'
        penalty is a list (few rows or units per column: the GLM path's grid) and ``tune``,
        each penalty is cross-fitted and the one with the lowest out-of-fold loss on ``arm``'s
        rows kept, as the pooled GLM chooses its own (IHDP's 747 units: the propensity wants
        16-64d; with the deviations' prior d it overfitted: boosted RMSE 0.256 -> 0.190 on
        100 stacked items, 0.210 -> 0.162 one item per call; tuning the propensity alone
        left the per-call 0.194); ``shared_penalties[name]`` reports it. Then, given a
        ``shrinkage_grid`` (``shrinkage="auto"``, several items), an outcome model's ridge
        on the items' deviations the same way at the chosen shared penalty
        (``shrinkages[name]``; the untuned value wins ties; the propensity keeps its, as
        ``estimate.nuisance.SHRINKAGE_GRID`` says). With ``tune=False`` (the factorised
        propensity, under-smoothed on purpose: tuned, its per-call RMSE rose 0.289 -> 0.343)
        the shared slopes get the deviations' prior."""
        grid = self.glm.get("shared_penalty")
        if isinstance(grid, (list, tuple)) and not tune:
            grid = self.glm["shrinkage"]
        grid = list(grid) if isinstance(grid, (list, tuple)) else [grid]
        candidates = [{} if lam is None else {"shared_penalty": lam} for lam in grid]
        fits, losses = self._cross_fit_candidates(target, arm, family, candidates)
        best = int(np.argmin(losses))  # ties keep the smaller penalty (the grid ascends)
        if len(grid) > 1:
            self.shared_penalties[name] = grid[best]
            # not the propensity's, nor where every item has boosters of its own on top (they
            # correct what the offset's ridge leaves; ACIC's 10 large items chose d anyway, at
            # 4 more offset fits a fold)
            tune_shrinkage = name != "e" and len(self.large_on_all_rows) < self.n_items
            more = [dict(candidates[best], shrinkage=value) for value in self.shrinkage_grid
                    if value != self.glm["shrinkage"]] if tune_shrinkage else []
            if more:
                more_fits, more_losses = self._cross_fit_candidates(target, arm, family, more)
                k = int(np.argmin(more_losses))
                self.shrinkages[name] = self.glm["shrinkage"]
                if more_losses[k] < losses[best]:
                    fits, best, candidates = more_fits, k, more
                    self.shrinkages[name] = more[k]["shrinkage"]
        etas = [per_candidate[best].decision_function(self.Xs, self.item).astype(np.float64)
                for per_candidate in fits]
        return self._with_refit(etas, target, arm, family, name, candidates[best])

    def _cross_fit_candidates(self, target, arm, family, candidates):
        """The offset GLM per fold and candidate settings (``_fit_grid``), and each
        candidate's out-of-fold loss on ``arm``'s rows (one candidate: no loss, [0])."""
        fits = [self._fit_grid(target, arm & self.split(f)[1], family, candidates)
                for f in range(self.n_folds)]
        if len(candidates) == 1:
            return fits, [0.0]
        losses = []
        for k in range(len(candidates)):
            held_out = np.zeros(len(target))
            for f, per_candidate in enumerate(fits):
                test = np.flatnonzero(self.split(f)[0] & arm)
                held_out[test] = per_candidate[k].decision_function(
                    self.Xs[torch.as_tensor(test, device=self.Xs.device)], self.item[test])
            pred = 1 / (1 + np.exp(-held_out)) if family == "logistic" else held_out
            losses.append(float(row_loss(pred[arm], target[arm], family).mean()))
        return fits, losses

    def _padded(self, target, train):
        """The ``train`` rows' blocked design, its padded ``target`` and its blocks."""
        rows = np.flatnonzero(train)
        design = BlockedDesign(self.Xs, self.item[rows], self.n_items,
                               index=torch.as_tensor(rows, device=self.Xs.device))
        return design, design.pad(target[rows]), design.blocks()

    def _fit_grid(self, target, train, family, candidates, padded=None):
        """The pooled segment GLM on ``train`` rows once per candidate of ``candidates``
        (settings overriding the offset GLM's own: a shared-slope penalty, a deviations'
        ridge), on one padded design (``padded``: ``_padded``'s, if made already). Logistic
        fits run from the largest penalties down, each starting Newton from the last (a
        neighbour's optimum: 3-5 steps instead of 8-11 cold); a Gaussian fit is one exact step
        from anywhere, so each starts cold from the design's X'X, computed once. -> the fits,
        in ``candidates``' order."""
        design, y, blocks = padded or self._padded(target, train)
        p = design.X.shape[-1]
        gram = (block_grams(design.X, blocks, design.block_seg, self.n_items)
                if self.n_items * p * p <= design.X.numel() // 2 else None)  # else cheap anyway
        settings = [{**self.glm, **candidate} for candidate in candidates]
        strength = lambda k: (settings[k].get("shared_penalty", 0.0), settings[k]["shrinkage"])
        fits, last = {}, None
        for k in sorted(range(len(candidates)), key=strength, reverse=True):
            glm = SegmentGLM(family=family, pooled=True, tol=1e-7, device=self.Xs.device,
                             dtype=self.Xs.dtype,
                             **settings[k])
            warm = last if family == "logistic" else None
            glm.fit_blocks(design, y, blocks, n_segments=self.n_items, init=warm,
                           first_gram=gram if warm is None else None)
            self.glm_n_iter.append(glm.n_iter_)
            self.glm_converged.append(bool(glm.converged_.all()))
            fits[k] = last = glm
        return [fits[k] for k in range(len(candidates))]

    def held_out(self, etas):
        """Each row's value from the fold that held it out (``etas``: one array per fold)."""
        out = np.zeros(len(self.item))
        for f, eta in enumerate(etas):
            out = np.where(self.split(f)[0], eta, out)
        return out

    def _with_refit(self, etas, target, arm, family, name, candidate):
        """With ``refit``: ``eta_gap[name]``, the GLM refitted on every ``arm`` row minus its
        out-of-fold linear predictor, on the rows of items too small for models of their own
        (``large_items`` of all rows: 0 on large items' rows). Cross-fitting costs a small
        item half its few rows; a large item little, and there the boosters' corrections are
        large (ACIC, 10 items of 4,802 rows, refitted too: RMSE 0.122 -> 0.140). Returns
        ``etas``."""
        if self.refit:
            small = ~np.isin(np.arange(self.n_items), self.large_on_all_rows)
            if small.any():
                eta, eta_loo = self._all_rows_eta(target, arm, family, candidate)
                oof = self.held_out(etas)
                self.eta_gap[name] = np.where(small[self.item], eta - oof, 0.0)
                self.loo_gap[name] = np.where(small[self.item], eta_loo - oof, 0.0)
        return etas

    def _all_rows_eta(self, target, arm, family, candidate):
        """The offset GLM fitted on every ``arm`` row: its linear predictor for all rows, and
        the same with its approximate leave-one-out value on the rows it was fitted on
        (``SegmentGLM.loo_predict_blocks``: the variance's, as the pooled GLM's refit)."""
        design, y, blocks = padded = self._padded(target, arm)
        glm = self._fit_grid(target, arm, family, [candidate], padded=padded)[0]
        eta = glm.decision_function(self.Xs, self.item).astype(np.float64)
        mean = design.unpad(glm.loo_predict_blocks(design, y, blocks)).double().cpu().numpy()
        if family == "logistic":
            mean = logit(mean, 1e-12)
        eta_loo = eta.copy()
        eta_loo[arm] = mean
        return eta, eta_loo

    def large_items(self, rows):
        """Items with at least ``min_item_rows`` training rows among ``rows`` in every fold."""
        smallest = np.full(self.n_items, np.iinfo(np.int64).max)
        for f in range(self.n_folds):
            train = rows & self.split(f)[1]
            smallest = np.minimum(smallest, np.bincount(self.item[train], minlength=self.n_items))
        return np.flatnonzero(smallest >= self.spec.min_item_rows)

    @cached_property
    def large_on_all_rows(self):
        """``large_items`` of every row: the items with models of their own on top of the
        offset GLM (joint outcome model), whose small-log refit and deviations' ridge stage
        are left out."""
        return self.large_items(np.ones(len(self.item), bool))

    def big_items(self, rows, learner):
        """The large items (``large_items``) that get models of their own from ``learner``."""
        big = self.large_items(rows)
        return big if getattr(learner, "own_item_models", True) else big[:0]  # per-item already

    def fit_one(self, target, arm, family, learners, index, arm_value=None, free_own=False):
        """Out-of-fold GLM predictions and, per learner, its out-of-fold pooled and own (NaN
        where none) predictions, the boosting rounds of its pooled fits and the number of
        items with models of their own. The GLM offset is fitted once per fold for all. A
        learner given as None is not fitted (its predictions stay NaN).

        With ``free_own`` (the propensity), the large items' own models of the first learner
        are also fitted from the item's base rate instead of the pooled GLM's offset, a
        further candidate (``free``, NaN elsewhere; else None). The offset carries the
        shared slopes' shrinkage towards the other items into a model that is the item's
        own: on ACIC (10 items with different assignment rules) the free propensity boosters
        have the lower out-of-fold loss (0.525 against 0.533) and the AIPW error falls,
        while on the simulator's non-linear logs (one rule for all items) the offset ones
        win. Outcome models keep the offset: it carries each arm's surface into the other
        arm's covariates (ACIC without it: RMSE 0.111 -> 0.140). -> (glm, fits, free)."""
        n = len(target)
        glm_pred = np.full(n, np.nan)
        fits = [(np.full(n, np.nan), np.full(n, np.nan), [], 0) for _ in learners]
        bigs = [None if learner is None else self.big_items(arm, learner)
                for learner in learners]
        per_item = learners and not getattr(learners[0], "own_item_models", True)
        free = (np.full(n, np.nan) if free_own and learners and learners[0] is not None
                and len(bigs[0]) else None)
        # a per-item learner's (factorised) propensity keeps the offset's prior; its outcome
        # offsets are tuned as the others' (IHDP-A, 100 stacked: RMSE 0.142 -> 0.136, width
        # 1.63x -> 1.48x the oracle's; one per call 0.136 -> 0.134, 1.35x -> 1.24x)
        etas = self.glm_etas(target, arm, family, "e" if arm_value is None else f"mu{arm_value}",
                             tune=not per_item or arm_value is not None)
        # the propensity on the joint model's columns, the arm skipped: they share matrices
        share = free_own and self.matrices is not None
        for f in range(self.n_folds):
            test, train = self.split(f)
            train = arm & train
            eta = etas[f]
            if arm_value is not None:
                self.etas[arm_value, f] = eta
            glm_pred[test] = 1 / (1 + np.exp(-eta[test])) if family == "logistic" else eta[test]
            for j, learner in enumerate(learners):
                if learner is None:
                    continue
                pooled, own, rounds, _ = fits[j]
                also = ((self._base_rate(target, train, family), free)
                        if j == 0 and free is not None else None)
                shared = share and j == 0
                X_pooled, X_own = (self.with_t_pooled, self.with_t) if shared else (self.Xp, self.X)
                rounds.append(self._fit_fold(
                    learner, X_pooled, X_own, target, family, train, test, eta, [(eta, None)],
                    bigs[j], [(pooled, own)], self.seed * 1000 + 10 * index + f + 97 * j,
                    free=also, **(dict(fold=f, skip=self.X.shape[1]) if shared else {})))
                fits[j] = (pooled, own, rounds, len(bigs[j]))
        return glm_pred, fits, free

    def _base_rate(self, target, train, family):
        """Each row's item mean of ``target`` over the ``train`` rows, on the link scale
        (logit, the mean kept 1e-3 from 0 and 1: the start of a model fitted from scratch)."""
        total = np.bincount(self.item[train], weights=target[train], minlength=self.n_items)
        count = np.bincount(self.item[train], minlength=self.n_items)
        mean = np.divide(total, count, out=np.full(self.n_items, total.sum() / max(count.sum(), 1)),
                         where=count > 0)
        if family == "logistic":
            mean = logit(mean, 1e-3)
        return mean[self.item]

    def fit_joint(self, y, family, learner, index):
        """The joint outcome model: one learner on both arms' rows, the arm a feature, on top
        of each row's own arm's GLM offset (``fit_one`` of mu0 and mu1 must have run); trees
        then share the surface both arms have and split on the arm where they differ.
        Returns ((pooled, own) predictions at t = 0, the same at t = 1, rounds, n big)."""
        n = len(y)
        arms = [(np.full(n, np.nan), np.full(n, np.nan)) for _ in (0, 1)]
        big = self.big_items(np.ones(n, bool), learner)
        rounds = []
        for f in range(self.n_folds):
            test, train = self.split(f)
            eta0, eta1 = self.etas[0, f], self.etas[1, f]
            offset = np.where(self.t == 1, eta1, eta0)
            rounds.append(self._fit_fold(learner, self.with_t_pooled, self.with_t, y, family,
                                         train, test, offset, [(eta0, 0), (eta1, 1)], big, arms,
                                         self.seed * 1000 + 10 * index + f + 53, fold=f,
                                         release=True))
        return arms[0], arms[1], rounds, len(big)

    def _fit_fold(self, learner, X_pooled, X_own, target, family, train, test, offset,
                  variants, big, outs, seed, free=None, fold=None, skip=None, release=False):
        """One fold of one learner, trained on ``train`` rows with ``offset``: fills, per
        variant (test offset, arm value to set in column d or None), its (pooled, own) arrays
        of ``outs`` on the test rows; returns the pooled fit's rounds (0: not fitted).
        ``free`` = (another offset, its own array): the own models are also fitted on that
        offset, on the same rows (one variant only; ``fit_one``'s ``free_own``).

        The pooled learner is fitted only where some item has no model of its own (the
        tail): where every item has one, the pooled fit would only compete with them, and on
        ACIC (10 items of 4,802 rows) it ran to the round cap on 24,000 rows and lost on all
        items but one, for about half the boosting time."""
        d = self.X.shape[1]

        def design(A, rows):  # the test rows once per variant, offsets alike
            blocks = []
            for _, arm in variants:
                block = A[rows]
                if arm is not None:
                    block = block.copy()
                    block[:, d] = arm
                blocks.append(block)
            return np.concatenate(blocks), np.concatenate([eta[rows] for eta, _ in variants])

        # early-stopping rows: a share of the training rows chosen by content (row-order free)
        share = getattr(learner, "validation_share", 0.2)
        validation = (self.key % np.uint64(10_000)).astype(np.int64) < int(share * 10_000)
        tr, test_idx = np.flatnonzero(train), np.flatnonzero(test)
        r = 0
        shared = lambda j: ({} if fold is None or self.matrices is None else
                            dict(matrices=self._slot(fold, j, release), skip=skip))
        if len(big) < self.n_items:
            X_test, offset_test = design(X_pooled, test_idx)
            [(pred, r)] = _fit_offsets(learner, X_pooled[tr], target[tr], [offset[tr]], X_test,
                                       [offset_test], family=family, validation=validation[tr],
                                       seed=seed, categorical=self.spec.item_feature,
                                       **shared(None))
            for k, (pooled, _) in enumerate(outs):
                pooled[test_idx] = pred[k * len(test_idx):(k + 1) * len(test_idx)]
        # rows are sorted by item: each big item's rows are one slice of tr / test_idx
        starts_tr, ends_tr = (np.searchsorted(self.item[tr], big, side=s)
                              for s in ("left", "right"))
        starts_te, ends_te = (np.searchsorted(self.item[test_idx], big, side=s)
                              for s in ("left", "right"))

        def fit_item(j):
            a, b = tr[starts_tr[j]:ends_tr[j]], test_idx[starts_te[j]:ends_te[j]]
            if len(b) == 0:
                return b, [np.zeros(0)] * (1 + (free is not None))
            X_test, offset_test = design(X_own, b)
            offsets, tests = [offset[a]], [offset_test]
            if free is not None:
                offsets.append(free[0][a]), tests.append(free[0][b])
            fits = _fit_offsets(learner, X_own[a], target[a], offsets, X_test, tests,
                                family=family, validation=validation[a],
                                seed=seed + 7919 * int(big[j]) + 1, **shared(int(big[j])))
            return b, [pred for pred, _ in fits]

        with ThreadPoolExecutor(max_workers=self.spec.n_jobs) as pool:
            for b, preds in pool.map(fit_item, range(len(big))):
                for k, (_, own) in enumerate(outs):
                    own[b] = preds[0][k * len(b):(k + 1) * len(b)]
                if free is not None:
                    free[1][b] = preds[1]
        return r


def _fit_offsets(learner, X, y, offsets, X_test, offsets_test, **kw) -> list:
    """The learner fitted once per offset on the same rows: in one call where it shares the
    work (``BoostedLearner.fit_predict_offsets``), else one ``fit_predict`` each."""
    if hasattr(learner, "fit_predict_offsets"):
        return learner.fit_predict_offsets(X, y, offsets, X_test, offsets_test, **kw)
    return [learner.fit_predict(X, y, offset, X_test, test, **kw)
            for offset, test in zip(offsets, offsets_test)]
