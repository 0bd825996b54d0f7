"""The one refutation loop: the original estimate, every chosen check's replicates, and the
tidy table with each check's verdict, whatever backend holds the rows (see ``checks``)."""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["run_refutations", "REFUTATION_COLUMNS"]

_STATS = ["estimate", "se", "p_value", "status"]
REFUTATION_COLUMNS = ["check", "replicate", "estimate", "se", "p_value", "status",
                      "original_ate", "original_se", "shift", "shift_in_se", "passed"]


def run_refutations(rows, refuters, keys: list, *, alpha: float, settings: dict) -> pd.DataFrame:
    """Run ``refuters`` (from ``choose_refuters``) on ``rows``; effects tables name the item
    keys ``keys`` and the effect ``estimate``. Returns one row per item, check and
    replicate (``keys + REFUTATION_COLUMNS``), with ``alpha`` and ``settings`` as columns
    (they survive merges)."""
    if not refuters:
        raise ValueError("no checks to run")
    original = rows.estimate()
    runs = [(refuter, replicate, effects) for refuter in refuters
            for replicate, effects in enumerate(refuter.refute(rows))]
    return _tidy(original, runs, keys, alpha).assign(alpha=alpha, **settings)


def _tidy(original, runs, keys, alpha) -> pd.DataFrame:
    """One row per item, check and replicate, with the shift from the original estimate and
    the check's verdict (NA where either run has no "ok" estimate)."""
    base = original[keys + ["estimate", "se", "status"]].rename(
        columns={"estimate": "original_ate", "se": "original_se", "status": "_original_status"})
    frames = [run[keys + _STATS].assign(check=refuter.name, replicate=replicate)
              for refuter, replicate, run in runs]
    out = pd.concat(frames, ignore_index=True).merge(base, on=keys, how="left")
    out["shift"] = out["estimate"] - out["original_ate"]
    out["shift_in_se"] = out["shift"] / out["original_se"]
    check = out["check"].to_numpy()
    passed = np.zeros(len(out), dtype=bool)
    for refuter in {r.name: r for r, _, _ in runs}.values():
        mine = check == refuter.name
        passed[mine] = refuter.passes(out[mine], alpha)
    evaluated = (out["status"] == "ok") & ((check == "placebo") | (out["_original_status"] == "ok"))
    out["passed"] = pd.array(np.where(evaluated, passed, pd.NA), dtype="boolean")
    out = out.drop(columns="_original_status")
    return out[keys + REFUTATION_COLUMNS].sort_values(keys + ["check", "replicate"],
                                                       ignore_index=True)
