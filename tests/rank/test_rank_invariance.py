"""rank_items' numbers depend on the data only: not on the order of the effects table's rows,
its index, the covariates' column order or names; and an item's Monte Carlo draws depend on
its key and the seed, not on the other items or the batching."""
import numpy as np
import pandas as pd
import pytest

from causalrec.rank import rank_items
from causalrec.utils.hashing import stream_uniforms

NUMBERS = ["posterior_mean", "posterior_sd", "posterior_low", "posterior_high",
           "prob_positive", "prob_top_k", "q_value", "rank"]


def effects_and_covariates(seed=0, n=150):
    """Effects driven by a numeric and a categorical covariate (z2 is noise), one unusable
    row; item ids in no particular order."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 2))
    topic = rng.choice(["a", "b", "c"], n)
    theta = 0.2 + 0.3 * z[:, 0] + 0.2 * (topic == "b") + 0.2 * rng.standard_normal(n)
    se = rng.uniform(0.1, 0.4, n)
    items = [f"i{j}" for j in rng.permutation(n)]
    eff = pd.DataFrame({"item": items, "ate": theta + se * rng.standard_normal(n), "se": se})
    eff.loc[3, "ate"] = np.nan  # kept, not ranked
    cov = pd.DataFrame({"item": items, "z1": z[:, 0], "z2": z[:, 1], "topic": topic})
    return eff, cov


def by_item(out):
    return out.set_index("item").sort_index()


@pytest.mark.parametrize("prior", ["normal", "npmle"])
@pytest.mark.parametrize("with_covariates", [False, True])
def test_shuffled_rows_and_index_give_identical_results(prior, with_covariates):
    eff, cov = effects_and_covariates()
    cov = cov if with_covariates else None
    base = rank_items(eff, prior=prior, covariates=cov, n_draws=300)
    shuffled = eff.sample(frac=1, random_state=1)
    shuffled.index = [f"r{i}" for i in np.random.default_rng(2).permutation(len(eff))]
    if cov is not None:
        cov = cov.sample(frac=1, random_state=3)
    moved = rank_items(shuffled, prior=prior, covariates=cov, n_draws=300)
    pd.testing.assert_frame_equal(by_item(base), by_item(moved), check_exact=True)
    assert base.attrs == moved.attrs
    # prob_top_k is not trivially 0 / 1 here, so the draws are really compared
    assert ((base.prob_top_k > 0.05) & (base.prob_top_k < 0.95)).sum() >= 5


@pytest.mark.parametrize("prior", ["normal", "npmle"])
def test_covariate_order_and_names_do_not_matter(prior):
    eff, cov = effects_and_covariates(1)
    base = rank_items(eff, prior=prior, covariates=cov, n_draws=300)
    names = {"z1": "q_z1", "z2": "a_z2", "topic": "zz_topic"}
    variants = {"reversed": cov[cov.columns[::-1]],
                "renamed": cov.rename(columns=names),
                "renamed, reversed": cov.rename(columns=names)[["zz_topic", "item", "a_z2",
                                                                "q_z1"]]}
    location = base.attrs["prior"].get("location", base.attrs["prior"])
    assert len(location["coef"]) == 5  # intercept, z1, z2, topic's two non-reference levels
    for label, frame in variants.items():
        out = rank_items(eff, prior=prior, covariates=frame, n_draws=300)
        # canonical column order: the same computation, so the same numbers (bitwise in
        # practice; 1e-12 relative allows for nothing but a reordered float sum)
        pd.testing.assert_frame_equal(by_item(base)[NUMBERS], by_item(out)[NUMBERS],
                                      rtol=1e-12, atol=0, obj=label)
        coef = out.attrs["prior"].get("location", out.attrs["prior"])["coef"]
        back = {k.replace("q_z1", "z1").replace("a_z2", "z2").replace("zz_topic", "topic"): v
                for k, v in coef.items()}
        for name, value in location["coef"].items():
            assert back[name] == pytest.approx(value, rel=1e-12, abs=0)


def test_item_streams_do_not_depend_on_other_items_or_batching():
    keys = np.array([11, 5, 2**63 + 7, 42], dtype=np.uint64)
    whole = stream_uniforms(keys, 9, 0, 50)
    assert np.all((whole > 0) & (whole < 1))
    alone = stream_uniforms(keys[[2]], 9, 0, 50)
    np.testing.assert_array_equal(whole[2], alone[0])
    batched = np.hstack([stream_uniforms(keys[::-1], 9, a, b) for a, b in ((0, 20), (20, 30))])
    np.testing.assert_array_equal(whole, batched[::-1])
    assert not np.array_equal(whole, stream_uniforms(keys, 10, 0, 50))  # the seed matters
    assert not np.array_equal(whole, stream_uniforms(keys, 9, 0, 50, stream=1))

