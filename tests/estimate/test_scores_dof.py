"""Welch-Satterthwaite degrees of freedom of the per-item intervals (estimate/scores.py)."""
import numpy as np
import torch

from causalrec.estimate.scores import effects_table


def _table(t, y, e, method="ipw", seg=None):
    as_t = lambda a, kind=torch.float64: torch.as_tensor(np.asarray(a), dtype=kind)
    seg = np.zeros(len(t), dtype=np.int64) if seg is None else seg
    zeros = np.zeros(len(t))
    table, _, _ = effects_table(as_t(seg, torch.long), as_t(t), as_t(y), as_t(e), as_t(zeros),
                                as_t(zeros), int(seg.max()) + 1, method, 0.01, None, 0.05,
                                binary=False)
    return table


def test_constant_propensity_gives_welchs_two_sample_dof():
    # Hajek IPW with a constant propensity is the difference of the arm means; its dof must
    # be Welch-Satterthwaite's with each arm's mean squared deviation over n_arm - 1 dof
    rng = np.random.default_rng(0)
    t = np.r_[np.ones(15), np.zeros(60)]
    y = np.r_[rng.normal(0, 3, 15), rng.normal(0, 1, 60)]
    table = _table(t, y, np.full(75, 0.2))
    v = [np.mean((y[t == a] - y[t == a].mean()) ** 2) / (t == a).sum() for a in (1, 0)]
    welch = sum(v) ** 2 / (v[0] ** 2 / 14 + v[1] ** 2 / 59)
    assert np.isclose(table.dof[0], welch, rtol=1e-10)
    assert 14 <= table.dof[0] < 74  # between the smaller arm's and the pooled dof
    assert np.isclose(table.ate[0], y[t == 1].mean() - y[t == 0].mean())


def test_a_dominant_weight_leaves_few_degrees_of_freedom():
    # 30 treated rows, one of them with 50x the others' weight: the Kish effective size of
    # the treated arm is (100 + 58)^2 / (100^2 + 29 * 2^2) = 2.47, and its spread dominates the
    # variance, so the interval must use t with ~ess - 1 = 1.5 dof, not 29
    rng = np.random.default_rng(1)
    t = np.r_[np.ones(30), np.zeros(200)]
    e = np.r_[0.01, np.full(29, 0.5), np.full(200, 0.5)]
    y = rng.normal(0, 1, 230)
    table = _table(t, y, e)
    ess = table.ess_treated[0]
    assert np.isclose(ess, 158 ** 2 / (100 ** 2 + 29 * 4))
    # dof <= nu_t (1 + v_c / v_t)^2 with nu_t = ess - 1: a few when the treated spread dominates
    assert 1 <= table.dof[0] < 2 * ess
    even = _table(t, y, np.full(230, 0.5))
    assert even.dof[0] > 20
    half = lambda tab: (tab.ci_high[0] - tab.ci_low[0]) / (2 * tab.se[0])
    assert half(table) > 1.5 * half(even)  # t quantile ~3.5 vs ~2.0 (29 dof: the old rule)
