"""Target policies for off-policy values (item ids, per-row probabilities or a rows x items
table), and the logging policy estimated from the logged propensities."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..schema import SchemaError
from ..utils.frames import check_frame
from .log import _bandit_log, _catalogue

ROW_SUM_TOL = 1e-6


class _Policy:
    """A validated policy: dense (rows x items) probabilities or sparse (ids, probs) lists."""

    def __init__(self, policy, items: np.ndarray, n_rows: int):
        catalogue = pd.Index(items)
        if isinstance(policy, tuple) and len(policy) == 2:
            ids, probs = (np.asarray(p) for p in policy)
            ids = ids.reshape(n_rows, -1) if ids.ndim == 1 and ids.size == n_rows else ids
            probs = probs.reshape(ids.shape) if probs.size == ids.size else probs
            if ids.shape != probs.shape or ids.ndim != 2 or len(ids) != n_rows:
                raise ValueError(f"a sparse policy is (item_ids, probs), two arrays of shape "
                                 f"(rows, k) with rows = {n_rows}; got {ids.shape} and {probs.shape}")
            codes = catalogue.get_indexer(ids.ravel())
            _check_known(ids.ravel()[codes < 0])
            self.codes, self.dense = codes.reshape(ids.shape), None
            self.probs = probs.astype(np.float64)
        else:
            if isinstance(policy, pd.DataFrame):
                _check_policy_frame(policy)
                _check_known(np.asarray(policy.columns)[catalogue.get_indexer(policy.columns) < 0])
                policy = policy.reindex(columns=catalogue, fill_value=0.0).to_numpy(dtype=np.float64)
            dense = np.asarray(policy, dtype=np.float64)
            if dense.shape != (n_rows, len(catalogue)):
                raise ValueError(f"a dense policy has shape (rows, items) = ({n_rows}, "
                                 f"{len(catalogue)}), got {dense.shape}")
            self.dense, self.probs = dense, dense
        _check_probabilities(self.probs)

    def at(self, a: np.ndarray) -> np.ndarray:
        """pi(a_i | row i) for one item per row."""
        if self.dense is not None:
            return self.dense[np.arange(len(a)), a]
        return (self.probs * (self.codes == a[:, None])).sum(1)

    def expect(self, q: torch.Tensor, rows: np.ndarray) -> np.ndarray:
        """sum_a pi(a | i) q(x_i, a) for a chunk of rows."""
        if self.dense is not None:
            pi = torch.as_tensor(self.dense[rows], device=q.device)
            return (pi * q).sum(1).cpu().numpy()
        codes = torch.as_tensor(self.codes[rows], device=q.device)
        probs = torch.as_tensor(self.probs[rows], device=q.device)
        return (q.gather(1, codes) * probs).sum(1).cpu().numpy()

    def mass_outside(self, allowed: np.ndarray) -> np.ndarray:
        """Per row, the probability put on items where ``allowed`` (rows x items) is False."""
        if self.dense is not None:
            return (self.dense * ~allowed).sum(1)
        ok = np.take_along_axis(allowed, self.codes, axis=1)
        return (self.probs * ~ok).sum(1)


def _check_policy_frame(policy: pd.DataFrame) -> None:
    """One column per item: a repeated item column would have two probabilities."""
    check_frame(policy, "policy")
    repeated = policy.columns[policy.columns.duplicated()].unique()
    if len(repeated):
        shown = ", ".join(repr(c) for c in repeated[:5].tolist())
        raise SchemaError(None, f"policy: item column(s) {shown} appear more than once; give "
                          "each item one column of probabilities (e.g. sum the copies: "
                          "policy.T.groupby(level=0).sum().T)")


def _check_known(unknown) -> None:
    if len(unknown):
        shown = ", ".join(repr(u) for u in pd.unique(unknown)[:5].tolist())
        raise ValueError(f"the policy names item(s) not in the catalogue: {shown}")


def _check_probabilities(probs: np.ndarray) -> None:
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise ValueError("policy probabilities must be finite and non-negative")
    sums = probs.sum(1)
    bad = np.flatnonzero(np.abs(sums - 1) > ROW_SUM_TOL)
    if len(bad):
        raise ValueError(f"policy probabilities must sum to 1 in every row: {len(bad)} of "
                         f"{len(sums)} rows do not (row {bad[0]} sums to {sums[bad[0]]:.6g})")


def estimate_logging_policy(df: pd.DataFrame, item: str, propensity: str,
                            position: str | None = None, items=None) -> pd.DataFrame:
    """Average action distribution of a context-free logging policy, from its log.

    For position k and item a: ``n(a, k) / sum 1 / p_i`` over the rows showing a at k, the
    inverse-propensity estimate of the time-averaged probability (exact when the policy was
    constant; the mean of the logged propensities would over-weight the times the item was
    likely). Rows are normalised to sum to 1. Returns a DataFrame indexed by position (one
    row "all" without ``position``) with one column per item.
    """
    _bandit_log(df.assign(__outcome__=0.0), item, "__outcome__", propensity, position, None)
    items = _catalogue(df[item], items)
    k = df[position] if position is not None else pd.Series("all", index=df.index)
    inv = 1.0 / df[propensity].to_numpy(dtype=np.float64)
    cells = pd.DataFrame({"k": k.to_numpy(), "a": df[item].to_numpy(), "inv": inv})
    grouped = cells.groupby(["k", "a"])["inv"].agg(["size", "sum"])
    table = (grouped["size"] / grouped["sum"]).unstack("a").reindex(columns=items).fillna(0.0)
    table.index.name, table.columns.name = position or "position", item
    return table.div(table.sum(axis=1), axis=0)
