"""The audit's plan: its checked roles and the steps that turn a backend's small facts (group
counts, per-item providers, segment effects) into the audit's tables. Every step here reads
only small tables, so the local fit and the Spark fit (``causalrec.spark.audit``) share them;
only the row work differs (see ``causalrec.fairness.rows``)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..schema import SchemaError, _as_list

__all__ = ["AuditPlan"]


@dataclass(frozen=True)
class AuditPlan:
    """The roles and settings of one audit fit, checked once (``from_audit``)."""

    item: str
    treatment: str
    outcome: str
    group: object
    confounders: tuple = ()
    categorical: tuple = ()  # without the group: it must not be adjusted away
    text: tuple = ()
    propensity: str | None = None
    provider: str | None = None
    reference: object = None
    min_group_rows: int = 50
    missing: str = "error"  # the log's missing-value policy (``InteractionLog``)

    @classmethod
    def from_audit(cls, audit) -> "AuditPlan":
        """The plan of a ``FairnessAudit`` whose parameters were validated."""
        if audit.group is None:
            raise SchemaError(None, "a fairness audit needs a group column (group=...)")
        if not isinstance(audit.item, str):
            raise SchemaError(str(audit.item), "the audit expects a single item column")
        return cls(item=audit.item, treatment=audit.treatment, outcome=audit.outcome,
                   group=audit.group, confounders=tuple(_as_list(audit.confounders)),
                   categorical=tuple(c for c in _as_list(audit.categorical) if c != audit.group),
                   text=tuple(_as_list(audit.text)), propensity=audit.propensity,
                   provider=audit.provider, reference=audit.reference,
                   min_group_rows=audit.min_group_rows, missing=audit.missing)

    @property
    def log_roles(self) -> dict:
        """The roles for ``InteractionLog`` (or the Spark door, which takes the same)."""
        return dict(item=self.item, treatment=self.treatment, outcome=self.outcome,
                    confounders=list(self.confounders), categorical=list(self.categorical),
                    text=list(self.text), propensity=self.propensity, group=self.group,
                    missing=self.missing)

    # ------------------------------------------------------------------ checks
    def check_groups(self, groups) -> None:
        """At least two groups (``groups``: the distinct labels)."""
        if len(groups) < 2:
            raise SchemaError(self.group, f"holds a single group ({groups[0]!r}); an audit "
                                          "compares at least two")

    def check_reference(self, groups) -> None:
        if self.reference is not None and self.reference not in set(groups):
            raise ValueError(f"reference group {self.reference!r} does not occur in column "
                             f"{self.group!r}")

    def item_providers(self, per_item) -> pd.Series:
        """item -> provider, sorted by item, from a backend's ``per_item`` facts (indexed by
        item: ``missing`` and ``distinct`` provider values, the ``provider``), or None when
        the column is absent; raises where the provider is missing or varies within an item."""
        if per_item is None:
            raise SchemaError(self.provider, "missing from the log (role 'provider')")
        n_missing = int(per_item["missing"].sum())
        if n_missing:
            raise SchemaError(self.provider, f"{n_missing} missing values")
        if bool((per_item["distinct"] > 1).any()):
            raise SchemaError(self.provider, "varies within an item; it must be an item "
                                             "attribute")
        return per_item["provider"].sort_index()

    # ------------------------------------------------------------------ small tables
    def group_table(self, counts: pd.DataFrame) -> pd.DataFrame:
        """Per group (sorted) ``n, n_treated, status`` from the backend's counts."""
        table = counts.copy()
        table["n"] = table["n"].astype(np.int64)
        table["n_treated"] = table["n_treated"].astype(np.int64)
        status = np.where(table["n"] < self.min_group_rows, "too_few_rows", "ok")
        status = np.where(table["n_treated"] == table["n"], "no_control", status)
        table["status"] = np.where(table["n_treated"] == 0, "no_treated", status)
        return table

    @staticmethod
    def full_grid(effects: pd.DataFrame, items, groups) -> pd.DataFrame:
        """Every item x group pair of the segment ``effects`` (first two columns: item and
        group, by position: the estimator's names for them vary), including pairs that never
        occur (status "no_rows")."""
        effects = effects.set_axis(["item", "group"] + list(effects.columns[2:]), axis=1)
        grid = pd.MultiIndex.from_product([items, groups], names=["item", "group"])
        full = effects.set_index(["item", "group"]).reindex(grid).reset_index()
        absent = full["status"].isna()
        full.loc[absent, ["n", "n_treated", "n_control"]] = 0
        full.loc[absent, "status"] = "no_rows"
        for col in ("n", "n_treated", "n_control"):
            full[col] = full[col].astype(np.int64)
        return full

    def pick_reference(self, groups: pd.DataFrame):
        """The given reference (which must be "ok"), else the largest "ok" group."""
        if self.reference is not None:
            if groups.loc[self.reference, "status"] != "ok":
                raise ValueError(f"reference group {self.reference!r} has status "
                                 f"{groups.loc[self.reference, 'status']!r}")
            return self.reference
        ok = groups[groups["status"] == "ok"]
        if not len(ok):
            raise ValueError(f"no group can be audited: {groups['status'].to_dict()}")
        return ok["n"].idxmax()
