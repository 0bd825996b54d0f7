"""Numerical building blocks of the estimator's hot path, each against a plain reference."""
import numpy as np
import pandas as pd

from causalrec.estimate.folds import _mix, _stratum_order, row_hash


def test_raw_design_with_its_moments_equals_the_standardised_design():
    import causalrec as cr
    from causalrec.estimate.design import build_design
    rng = np.random.default_rng(6)
    n = 2_000
    values = rng.normal(size=(n, 3)) * [1.0, 50.0, 1e-3] + [0.0, 1e4, -2.0]
    df = pd.DataFrame(values, columns=["a", "b", "c"]).assign(
        const=1.0, item=rng.integers(0, 5, n), t=rng.integers(0, 2, n), y=rng.random(n))
    log = cr.InteractionLog(df, item="item", treatment="t", outcome="y",
                            confounders=["a", "b", "const", "c"])
    standard = build_design(log, dtype=np.float64)
    assert standard.dropped == ["const"] and standard.columns == ["a", "b", "c"]
    np.testing.assert_allclose(standard.X.mean(0), 0.0, atol=1e-10)
    np.testing.assert_allclose(standard.X.std(0), 1.0, rtol=1e-10)
    for contiguous in (True, False):
        raw = build_design(log, dtype=np.float64, standardise=False, contiguous=contiguous)
        assert raw.X.flags.c_contiguous or not contiguous
        np.testing.assert_allclose((raw.X - raw.center) * raw.scale, standard.X, atol=1e-10)


def test_row_hash_equals_pandas():
    rng = np.random.default_rng(0)
    n = 5_003
    df = pd.DataFrame({
        "i32": rng.integers(-5, 5, n).astype(np.int32), "f32": rng.normal(size=n).astype(np.float32),
        "f64": np.where(rng.random(n) < 0.3, np.nan, rng.normal(size=n)),
        "zeros": np.where(rng.random(n) < 0.5, -0.0, 0.0), "flag": rng.random(n) < 0.5,
        "u64": rng.integers(0, 2**40, n).astype(np.uint64), "u8": rng.integers(0, 200, n).astype(np.uint8),
        "text": rng.choice(["a", "bb", None], n), "cat": pd.Categorical(rng.choice(["p", "q"], n)),
        "nullable": pd.array(rng.integers(0, 3, n), dtype="Int64"),
        "string": pd.array(rng.choice(["u", "v"], n), dtype="string")})
    df = pd.concat([df, df[["f32"]]], axis=1)  # a duplicated column name
    expected = pd.util.hash_pandas_object(df, index=False).to_numpy()
    np.testing.assert_array_equal(row_hash(df, chunk_rows=1000), expected)


def test_stratum_order_equals_lexsort():
    rng = np.random.default_rng(1)
    n = 20_000
    stratum = rng.integers(0, 50, n)
    key = rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n, dtype=np.uint64)
    outcome = rng.random(n)
    np.testing.assert_array_equal(_stratum_order(stratum, key, outcome),
                                  np.lexsort((outcome, key, stratum)))
    key[:100] = key[100:200]  # duplicated content: the outcome must break the ties
    stratum[:100] = stratum[100:200]
    np.testing.assert_array_equal(_stratum_order(stratum, key, outcome),
                                  np.lexsort((outcome, key, stratum)))
    key[200:300] = key[300:400] ^ np.uint64(1)  # keys equal but for their lowest bit
    stratum[200:300] = stratum[300:400]
    np.testing.assert_array_equal(_stratum_order(stratum, key, outcome),
                                  np.lexsort((outcome, key, stratum)))


def test_mix_is_the_splitmix64_finaliser():
    keys = np.array([0, 1, 7, 2**63 + 5, 2**64 - 1], dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = (keys ^ (keys >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        expected = h ^ (h >> np.uint64(31))
    np.testing.assert_array_equal(_mix(keys), expected)
    np.testing.assert_array_equal(keys, np.array([0, 1, 7, 2**63 + 5, 2**64 - 1], dtype=np.uint64))
