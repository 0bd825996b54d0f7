"""Where the audit's rows live: the row work of ``FairnessAudit.fit`` behind one small
interface, so the fit is one sequence of steps whatever holds the rows.

A backend (``LocalAuditRows`` here, ``causalrec.spark.audit.SparkAuditRows`` on Spark) has
``data`` (the log as given, kept as the audit's ``data_``) and, called in this order:

* ``validate(plan)``: the log's door; returns the validated ``InteractionLog`` (on Spark:
  its checked sample), whose confounders, categorical and text columns the models use;
* ``group_counts(plan)``: per group, sorted, ``n`` and ``n_treated``;
* ``provider_facts(plan)``: per item ``missing, distinct, provider`` (None: no such column);
* ``add_text(plan, estimator)``: embeds the text columns once; returns the component
  columns' names (numeric confounders of every model) and the fitted encoder;
* ``segment_effects(plan, estimator, confounders, categorical)``: item x group effects;
* ``exposure_sums(audit, confounders, categorical, items)``: the exposure models' sums
  (``causalrec.fairness.exposure.exposure_sums``) for ``exposure_from_sums``;
* ``group_rates()``: the descriptive rates by group if the backend computed them (Spark),
  else None (``FairnessAudit.metric_frame`` computes them from the rows).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..estimate.design import build_design
from ..schema import InteractionLog, check_key_values, check_unique_columns
from .exposure import exposure_sums, shifted_groups

__all__ = ["AuditRows", "LocalAuditRows", "TEXT_PREFIX"]

TEXT_PREFIX = "_text_"  # text components' column names; the folds hash them in name order


class AuditRows:
    """What every backend shares: the log as given, and no precomputed rates by default."""

    def __init__(self, data):
        self.data = data

    def group_rates(self):
        return None


class LocalAuditRows(AuditRows):
    """The audit's rows in a pandas DataFrame, in this process."""

    def validate(self, plan) -> InteractionLog:
        log = InteractionLog(self.data, **plan.log_roles)
        self.rows = log.data  # the working rows: text components join them
        return log

    def group_counts(self, plan) -> pd.DataFrame:
        frame = pd.DataFrame({"group": self.rows[plan.group],
                              "t": self.rows[plan.treatment].astype(float)})
        return frame.groupby("group", sort=True)["t"].agg(n="size", n_treated="sum")

    def provider_facts(self, plan) -> pd.DataFrame | None:
        values = self.rows.get(plan.provider)
        if values is None:
            return None
        check_unique_columns(self.rows, [plan.provider], "the log")  # the log door's key rule
        check_key_values(values, plan.provider)
        per_item = self.rows.groupby(plan.item, sort=True)[plan.provider]
        return pd.DataFrame({"missing": values.isna().groupby(self.rows[plan.item]).sum(),
                             "distinct": per_item.nunique(), "provider": per_item.first()})

    def add_text(self, plan, estimator):
        if not plan.text:
            return [], None
        from ..confounders import TextConfounders

        encoder = TextConfounders(encoder=estimator.text_encoder,
                                  n_components=estimator.text_components)
        features = encoder.fit_transform(self.rows, list(plan.text))
        features.columns = [f"{TEXT_PREFIX}{c}" for c in features.columns]
        self.rows = self.rows.assign(**features)
        return list(features.columns), encoder

    def segment_effects(self, plan, estimator, confounders, categorical) -> pd.DataFrame:
        # the group joins the item as a segment key
        log = InteractionLog(self.rows, item=[plan.item, plan.group], treatment=plan.treatment,
                             outcome=plan.outcome, confounders=confounders,
                             categorical=categorical, propensity=plan.propensity,
                             missing=plan.missing)
        return estimator.fit(log).effects_

    def exposure_sums(self, audit, confounders, categorical, items) -> dict:
        log = InteractionLog(self.rows, item=audit.item, treatment=audit.treatment,
                             outcome=audit.outcome, confounders=confounders,
                             categorical=categorical, missing=audit.missing)
        X = build_design(log, dtype=np.float64).X
        item_codes, _ = pd.factorize(self.rows[audit.item], sort=True)
        return exposure_sums(audit.estimator_, X,
                             self.rows[audit.treatment].to_numpy(dtype=np.float64),
                             item_codes, len(items), self.rows[audit.group].to_numpy(),
                             list(audit.groups_.index), shifted_groups(audit), audit.reference_)
