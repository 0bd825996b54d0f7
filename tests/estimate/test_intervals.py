"""Calibration of the estimator's item intervals on simulated logs (placebo and coverage)."""
import numpy as np
import pytest

from causalrec.datasets import simulate_log
from causalrec.estimate import estimate_item_effects

SEEDS = range(3)


@pytest.fixture(scope="module")
def logs():
    """Heavy-tailed logs (1000 items, Zipf 0.7: most items have < 300 rows), confounded
    through the numeric columns; each with a placebo copy whose treatment is permuted within
    item (true effect 0 for every item)."""
    out = []
    for seed in SEEDS:
        sim = simulate_log(n_items=1000, n_rows=200_000, popularity_skew=0.7,
                           text_confounding=0.0, seed=100 + seed)
        roles = {**sim.roles, "text": None}
        rng = np.random.default_rng(seed)
        permuted = sim.data.assign(recommended=sim.data.groupby("item_id").recommended.transform(
            lambda s: rng.permutation(s.to_numpy())))
        real = estimate_item_effects(sim.data, **roles, seed=seed)
        null = estimate_item_effects(permuted, **roles, seed=seed)
        real = real[real.status == "ok"].merge(sim.truth[["item", "true_ate"]], on="item")
        out.append((real, null[null.status == "ok"]))
    return out


def test_placebo_items_without_clicks_in_an_arm_are_not_significant(logs):
    null = [n for _, n in logs]
    rejected = np.concatenate([n.p_value.to_numpy() < 0.05 for n in null])
    arm_means = np.concatenate([n[["treated_mean", "control_mean"]].to_numpy() for n in null])
    degenerate = np.any((arm_means == 0) | (arm_means == 1), axis=1)
    # ~130 such items over 3 logs; their fitted click probabilities collapse with the arm's
    # clicks, and 88% were called significant before the null-rate variance floor
    assert degenerate.sum() > 80
    assert rejected[degenerate].mean() < 0.05 + 3 * np.sqrt(0.05 * 0.95 / degenerate.sum())
    # all ~1640 items: 9.7% before the floor; binomial se at 5% is 0.0054. Size: at most
    # 2 se over 5%. Not too conservative: at least the 4% less one se (3.46%).
    # Measured 5.36% (per log 5.0-5.5%) with per-fold normalisation and HC3 moderated by the
    # fitted-probability variance (PRIOR_DOF 12); the larger of the two instead: 4.69% (per
    # log 3.5-5.5%); the max with the textbook SE: 4.26%; HC3 alone: 5.8% (per log up to
    # 7.1%); the smaller arm's rows - 1 as dof instead of Welch's gave 3.4%.
    se = np.sqrt(0.05 * 0.95 / rejected.size)
    assert 0.04 - se < rejected.mean() < 0.05 + 2 * se


def test_intervals_cover_the_true_effects(logs):
    real = [r for r, _ in logs]
    covered = np.concatenate([((r.ci_low <= r.true_ate) & (r.true_ate <= r.ci_high)).to_numpy()
                              for r in real])
    assert covered.size > 1200
    # binomial se over ~1430 items: 0.006; the lower bound is 3 se under 0.95 (0.933;
    # measured 0.947, per log 0.941-0.957 (moderated variance); the larger of HC3 and the
    # fitted-probability variance: 0.961; the max with the textbook SE: 0.941; HC3 alone:
    # 0.926)
    assert covered.mean() > 0.95 - 3 * np.sqrt(0.05 * 0.95 / covered.size)
