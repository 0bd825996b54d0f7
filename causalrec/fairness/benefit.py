"""Exposure versus benefit (a group's or provider's share of the recommendations over its
share of the causal uplift) and descriptive outcome metrics by group (fairlearn)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from ..inference import critical_value

__all__ = ["group_benefit", "provider_benefit", "metric_frame"]


def _usable_segments(audit, audited) -> pd.DataFrame:
    """Segments of audited groups on items where every such segment with rows is "ok"
    (a group that never saw an item adds nothing to its exposure or uplift)."""
    eff = audit.group_effects_[audit.group_effects_["group"].isin(audited)]
    eff = eff[eff["n"] > 0]
    usable = (eff["status"] == "ok").groupby(eff["item"]).all()
    eff = eff[eff["item"].isin(usable.index[usable])]
    return eff.assign(uplift=eff["n"] * eff["ate"], uplift_var=(eff["n"] * eff["se"]) ** 2)


def group_benefit(audit, audited) -> pd.DataFrame:
    """Exposure share / uplift share per group (uplift: rows x effect, summed)."""
    per = (_usable_segments(audit, audited).groupby("group", sort=True)
           .agg(n_items=("item", "nunique"), n_treated=("n_treated", "sum"),
                uplift=("uplift", "sum"), uplift_var=("uplift_var", "sum"))
           .reindex(audit.groups_.index))
    per["n_items"] = per["n_items"].fillna(0).astype(np.int64)
    out = _share_ratio(per, audit.alpha_)
    out["status"] = audit.groups_["status"].where(audit.groups_["status"] != "ok", out["status"])
    return out.rename_axis("group").reset_index()


def provider_benefit(audit, provider: pd.Series, audited) -> pd.DataFrame:
    """Exposure share / uplift share per provider (``provider``: item -> provider), from the
    same item x group segments (an item's uplift sums its groups'; rows of groups not
    audited are left out)."""
    seg = _usable_segments(audit, audited)
    seg = seg.assign(provider=provider.reindex(seg["item"]).to_numpy())
    per = (seg.groupby("provider", sort=True)
           .agg(n_items=("item", "nunique"), n_treated=("n_treated", "sum"),
                uplift=("uplift", "sum"), uplift_var=("uplift_var", "sum"))
           .reindex(np.sort(provider.unique())))
    per["n_items"] = per["n_items"].fillna(0).astype(np.int64)
    out = _share_ratio(per, audit.alpha_)
    out.insert(0, "n_items_total", provider.value_counts().reindex(out.index))
    return out.rename_axis("provider").reset_index()


def _share_ratio(per: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Exposure share over uplift share, per key.

    ``per`` holds ``n_items, n_treated, uplift`` (summed n x ate) and ``uplift_var`` per key;
    keys with no estimable item enter neither total. Exposure counts are observed; the uplift
    share ``s`` gets a delta-method interval (keys are independent), and the ratio's interval
    is ``exposure_share / [s_high, s_low]`` (Fieller-like): when ``s`` may be zero the upper
    end is infinite rather than a misleadingly finite number.
    """
    has = per["n_items"] > 0
    exposed, uplift, var = (per[c].where(has) for c in ("n_treated", "uplift", "uplift_var"))
    total_e, total_m, total_v = exposed.sum(), uplift.sum(), var.sum()
    exposure_share, uplift_share = exposed / total_e, uplift / total_m
    # d share_g / d uplift_h = (1[h = g] - share_g) / total
    share_var = (var * (1 - 2 * uplift_share) + uplift_share ** 2 * total_v) / total_m ** 2
    share_se = np.sqrt(share_var.clip(lower=0))
    z = critical_value(alpha)
    low, high = uplift_share - z * share_se, uplift_share + z * share_se
    positive = (uplift > 0) & (total_m > 0)
    out = pd.DataFrame({
        "n_items": per["n_items"], "n_treated": per["n_treated"].where(has, 0).astype(np.int64),
        "exposure_share": exposure_share, "uplift": uplift, "uplift_se": np.sqrt(var),
        "uplift_share": uplift_share, "uplift_share_se": share_se,
        "exposure_uplift_ratio": (exposure_share / uplift_share).where(positive),
        "ratio_low": (exposure_share / high).where(positive & (high > 0)),
        "ratio_high": (exposure_share / low).where(low > 0, np.inf).where(positive)},
        index=per.index)
    out["status"] = np.where(~has, "no_estimable_items",
                             np.where(positive, "ok", "no_positive_uplift"))
    return out


def _exposure_rate(y_true, y_pred):
    return float(np.mean(y_pred))


def _outcome_rate(y_true, y_pred):
    return float(np.mean(y_true))


def _outcome_if_recommended(y_true, y_pred):
    chosen = np.asarray(y_pred) == 1
    return float(np.mean(np.asarray(y_true)[chosen])) if chosen.any() else np.nan


def _outcome_if_not(y_true, y_pred):
    chosen = np.asarray(y_pred) == 0
    return float(np.mean(np.asarray(y_true)[chosen])) if chosen.any() else np.nan


def metric_frame(data, treatment, outcome, group):
    """Descriptive rates by group (not causal: the recommended rows differ from the rest)."""
    from fairlearn.metrics import MetricFrame

    return MetricFrame(
        metrics={"exposure_rate": _exposure_rate,
                 "outcome_rate": _outcome_rate, "outcome_if_recommended": _outcome_if_recommended,
                 "outcome_if_not_recommended": _outcome_if_not},
        y_true=data[outcome].to_numpy(dtype=float), y_pred=data[treatment].to_numpy(dtype=float),
        sensitive_features=pd.Series(data[group].to_numpy(), name="group"))
