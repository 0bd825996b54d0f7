"""The per-(item, fold) normalised AIPW of estimate/scores.py: its point estimate, the
fallback for thin fold-arms, and its influence-function variance over replications."""
import numpy as np
import pandas as pd
import pytest
import torch

from causalrec.estimate.scores import _normalised_scores, _variance_of_mean, effects_table

as_t = lambda a, kind=torch.float64: torch.as_tensor(np.asarray(a), dtype=kind)


def _table(seg, fold, t, y, e, mu0, mu1):
    table, _, _ = effects_table(as_t(seg, torch.long), as_t(t), as_t(y), as_t(e), as_t(mu0),
                                as_t(mu1), int(seg.max()) + 1, "aipw", 0.01, None, 0.05,
                                binary=False,
                                folds=None if fold is None else as_t(fold, torch.long))
    return table


def _log(rng, n_items, n_rows, fold_bias):
    """Rows of ``n_items`` items, two folds; e known, mu1 / mu0 off by a per-(item, fold)
    shift (as nuisances fitted on different folds are): true effect 1 for every item."""
    seg = np.repeat(np.arange(n_items), n_rows)
    fold = rng.integers(0, 2, seg.size)
    x = rng.normal(size=seg.size)
    e = 1 / (1 + np.exp(-(0.8 * x - 0.5)))
    t = (rng.random(seg.size) < e).astype(float)
    y = 1.0 * t + x + rng.standard_t(4, size=seg.size)
    shift = rng.normal(0, fold_bias, (n_items, 2, 2))  # (item, fold, arm)
    mu0 = 0.7 * x + shift[seg, fold, 0]
    mu1 = 1 + 0.7 * x + shift[seg, fold, 1]
    return seg, fold, t, y, e, mu0, mu1


def test_estimate_is_the_row_share_weighted_mean_of_the_folds_normalised_estimates():
    rng = np.random.default_rng(0)
    seg, fold, t, y, e, mu0, mu1 = _log(rng, 5, 400, fold_bias=0.5)
    table = _table(seg, fold, t, y, e, mu0, mu1)
    for item in range(5):
        expected = 0.0
        for k in (0, 1):
            r = (seg == item) & (fold == k)
            wt, wc = t[r] / e[r], (1 - t[r]) / (1 - e[r])
            theta_k = ((mu1[r] - mu0[r]).mean() + (wt * (y[r] - mu1[r])).sum() / wt.sum()
                       - (wc * (y[r] - mu0[r])).sum() / wc.sum())
            expected += r.sum() / (seg == item).sum() * theta_k
        assert np.isclose(table.ate[item], expected, rtol=1e-12)
    # without folds: the item-level normalised estimate (one fold is the same thing)
    np.testing.assert_allclose(_table(seg, None, t, y, e, mu0, mu1).ate,
                               _table(seg, np.zeros_like(fold), t, y, e, mu0, mu1).ate, rtol=1e-12)


def test_an_arm_with_one_row_in_a_fold_is_normalised_over_the_item():
    # one treated row in fold 1: normalising it alone would leave it no residual (and no
    # variance); the treated arm falls back to the item, the control arm stays per fold
    rng = np.random.default_rng(1)
    n = 120
    seg, fold = np.zeros(n, dtype=np.int64), np.r_[np.zeros(60), np.ones(60)].astype(np.int64)
    t = np.zeros(n)
    t[:20] = 1
    t[60] = 1
    e, x = np.full(n, 0.2), rng.normal(size=n)
    y, mu0, mu1 = x + t + rng.normal(size=n), 0.5 * x + 0.3 * fold, 1 + 0.5 * x
    table = _table(seg, fold, t, y, e, mu0, mu1)
    wt, wc = t / e, (1 - t) / (1 - e)
    treated = (wt * (y - mu1)).sum() / wt.sum()
    control = sum((fold == k).mean() * (wc * (y - mu0))[fold == k].sum() / wc[fold == k].sum()
                  for k in (0, 1))
    assert np.isclose(table.ate[0], (mu1 - mu0).mean() + treated - control, rtol=1e-12)
    assert table.se[0] > 0


def test_influence_variance_matches_the_spread_over_replications():
    # 3,000 items, each one replication of the same design with its own large fold shifts
    # of the outcome models (sd 1.5): the per-fold estimate is unbiased and immune to them,
    # and the mean of its influence-function variance must match the variance of the
    # estimates across items (ratio of two variances over 3,000 draws: sampling sd ~0.03
    # with these tails; band +/- 0.1; measured 0.95-0.99 over seeds 2-5). Treating the
    # folds' weight sums as constants (no linearisation, no centring on each fold's mean
    # residual) keeps the shifts in the spread: 1.65-1.70 measured, asserted > 1.3.
    rng = np.random.default_rng(2)
    n_items = 3000
    seg, fold, t, y, e, mu0, mu1 = _log(rng, n_items, 150, fold_bias=1.5)
    table = _table(seg, fold, t, y, e, mu0, mu1)
    estimates = table.ate.to_numpy()
    assert abs(estimates.mean() - 1) < 3 * estimates.std() / np.sqrt(n_items)
    T, rows = as_t, as_t(seg, torch.long)
    norm = _normalised_scores(rows, as_t(fold, torch.long), torch.ones(len(t), dtype=torch.float64),
                              T(t / e), T((1 - t) / (1 - e)), T(y), T(mu0), T(mu1), n_items)
    n = torch.full((n_items,), 150.0, dtype=torch.float64)
    mean_var = lambda psi: _variance_of_mean(psi, rows, n_items, n).numpy().mean()
    ratio = mean_var(norm.psi) / estimates.var()
    assert 0.9 < ratio < 1.1, ratio
    # HC3 residuals inflate it a little (leverage = a row's share of its fold-arm's weight)
    assert 1 <= mean_var(norm.psi_hc3) / mean_var(norm.psi) < 1.15
    fixed = mean_var(T(mu1 - mu0) + T(t) * norm.omega_t * T(y - mu1)
                     - T(1 - t) * norm.omega_c * T(y - mu0))
    assert fixed / estimates.var() > 1.3
    # the reported intervals cover (the normalised HC3 variance alone, as the ratio above:
    # the shifts do not inflate it)
    covered = np.abs(estimates - 1) <= (table.ci_high - table.ate).to_numpy()
    assert covered.mean() > 0.95 - 3 * np.sqrt(0.05 * 0.95 / n_items)


@pytest.mark.parametrize("method, normalize", [("aipw", True), ("aipw", False), ("ipw", True),
                                               ("or", True)])
def test_no_trim_equals_a_trim_that_keeps_every_row_bit_for_bit(method, normalize):
    """Without trimming the scores skip the masked copies of psi: the result must equal a
    trim that keeps every row (which masks), bit for bit."""
    seg, fold, t, y, e, mu0, mu1 = _log(np.random.default_rng(5), 6, 300, 0.2)
    run = lambda trim: effects_table(
        as_t(seg, torch.long), as_t(t), as_t(y), as_t(e), as_t(mu0), as_t(mu1), 6, method,
        0.01, trim, 0.05, binary=False, normalize=normalize, folds=as_t(fold, torch.long))
    assert e.min() > 1e-9 and e.max() < 1 - 1e-9
    (a, psi_a, e_a), (b, psi_b, e_b) = run(None), run(1e-9)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert np.array_equal(psi_a, psi_b) and np.array_equal(e_a, e_b)
