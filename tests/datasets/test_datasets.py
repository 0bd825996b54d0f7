"""The simulator's ground truth and the bundled sample."""
import numpy as np
import pandas as pd
import pytest

import causalrec as cr
from causalrec.datasets.simulate import SAMPLE_SETTINGS, simulate_log


def test_truth_is_the_mean_of_row_effects_and_exposure_is_confounded():
    sim = simulate_log(n_items=30, n_rows=20_000, seed=1)
    row = sim.row_truth.assign(item=sim.data["item_id"])
    expected = row.groupby("item")["effect"].mean()
    np.testing.assert_allclose(sim.truth.set_index("item")["true_ate"], expected)
    assert np.allclose(sim.row_truth["mu1"] - sim.row_truth["mu0"], sim.row_truth["effect"])
    # the logging policy favours users who click anyway: exposure correlates with mu0
    corr = np.corrcoef(sim.row_truth["propensity"], sim.row_truth["mu0"])[0, 1]
    assert corr > 0.3
    counts = sim.data["item_id"].value_counts()
    assert counts.max() > 10 * counts.median()  # Zipf: the head item has ~15x the median


def test_same_seed_same_log_and_text_topic_confounding_switch():
    a, b = simulate_log(n_rows=2_000, seed=3), simulate_log(n_rows=2_000, seed=3)
    pd.testing.assert_frame_equal(a.data, b.data)
    only_text = simulate_log(n_rows=20_000, numeric_confounding=0.0, seed=3)
    corr = np.corrcoef(only_text.data["user_activity"], only_text.row_truth["propensity"])[0, 1]
    assert abs(corr) < 0.05


def test_planted_disparity_lowers_group_effects():
    sim = simulate_log(n_rows=20_000, effect_disparity=1.0, disparity_share=0.5, seed=4)
    gt = sim.group_truth.merge(sim.truth[["item", "planted"]], on="item")
    planted_b = gt[(gt["group"] == "B") & gt["planted"]]
    assert np.allclose(planted_b["true_ate"], 0.0)
    assert (gt[(gt["group"] == "A") & gt["planted"]]["true_ate"].abs() > 0).any()


def test_bundled_sample_matches_its_generator():
    sample = cr.datasets.load_sample()
    fresh = simulate_log(**SAMPLE_SETTINGS)
    pd.testing.assert_frame_equal(sample.data, fresh.data, check_dtype=False)
    pd.testing.assert_frame_equal(sample.truth, fresh.truth, check_dtype=False)
    cr.InteractionLog(sample.data, **sample.roles)  # the roles validate


def test_bad_simulator_options():
    for bad in [dict(outcome="ordinal"), dict(n_topics=0), dict(n_groups=9)]:
        with pytest.raises(ValueError):
            simulate_log(n_rows=100, **bad)


def test_read_log_csv_parquet_and_errors(tmp_path):
    df = simulate_log(n_rows=500, seed=0).data
    df.to_csv(tmp_path / "log.csv", index=False)
    df.to_parquet(tmp_path / "log.parquet", index=False)
    for name in ["log.csv", "log.parquet"]:
        back = cr.read_log(tmp_path / name)
        assert back.shape == df.shape
    with pytest.raises(FileNotFoundError, match="no such log file"):
        cr.read_log(tmp_path / "missing.csv")
    (tmp_path / "log.xlsx").write_text("x")
    with pytest.raises(cr.SchemaError, match="csv or .parquet"):
        cr.read_log(tmp_path / "log.xlsx")


def test_every_exported_name_resolves():
    for name in cr.__all__:
        assert getattr(cr, name) is not None
    with pytest.raises(AttributeError):
        cr.not_a_name
