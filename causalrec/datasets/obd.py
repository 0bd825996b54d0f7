"""Loader for the Open Bandit Dataset (ZOZO, Inc.): logged bandit feedback with propensities.

Each row is one impression: the item shown in a position, whether it was clicked, and the
probability the logging policy gave that item in that position. The repository ships the
public 10,000-row samples of campaign "all" in ``data/obd/`` (see its README and LICENSE).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..schema import SchemaError

__all__ = ["load_open_bandit", "OBD_COLUMNS"]

OBD_COLUMNS = ["timestamp", "item_id", "position", "click", "propensity_score"]


def load_open_bandit(path, item_context: bool = False):
    """Read one Open Bandit Dataset log.

    Parameters
    ----------
    path : a log directory (e.g. ``"data/obd/bts_all"``, holding ``<campaign>.csv`` and
        ``item_context.csv``) or the log's CSV file itself.
    item_context : also return the item feature table.

    Returns
    -------
    DataFrame, one row per impression: ``timestamp`` (UTC datetime), ``item_id``,
    ``position`` (1, 2, 3), ``click`` (0/1), ``propensity_score``, ``user_feature_0..3``
    (hashed strings) and ``user-item_affinity_<item>``; with ``item_context=True`` the tuple
    ``(log, items)`` where ``items`` has one row per ``item_id``.
    """
    path = Path(path)
    log_file = _log_file(path)
    # hashed categories stay strings (a hash of digits only must not become a number)
    log = pd.read_csv(log_file, index_col=0, dtype={f"user_feature_{k}": str for k in range(16)})
    missing = [c for c in OBD_COLUMNS if c not in log.columns]
    if missing:
        raise SchemaError(missing[0], f"missing from {log_file} (not an Open Bandit Dataset log?)")
    log["timestamp"] = pd.to_datetime(log["timestamp"], utc=True)
    log = log.reset_index(drop=True)
    if not item_context:
        return log
    items_file = log_file.parent / "item_context.csv"
    if not items_file.exists():
        raise FileNotFoundError(f"no item_context.csv next to {log_file}")
    items = pd.read_csv(items_file, index_col=0).reset_index(drop=True)
    return log, items


def _log_file(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"no such Open Bandit Dataset log: {path}")
    candidates = sorted(p for p in path.glob("*.csv") if p.name != "item_context.csv")
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "none"
        raise FileNotFoundError(f"expected one log CSV besides item_context.csv in {path}, found {found}")
    return candidates[0]
