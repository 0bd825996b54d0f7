"""Numerical building blocks of the estimator's hot path, each against a plain reference."""
import warnings

import numpy as np
import pandas as pd

from causalrec.utils import hashing
from causalrec.estimate.folds import FoldAssigner, _mix, _stratum_order, assign_folds, row_hash


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


def _mixed_frame(n, seed):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "item": rng.integers(0, 30, n).astype(np.int32), "t": rng.integers(0, 2, n).astype(np.int8),
        "y": rng.random(n), "f32": rng.normal(size=n).astype(np.float32),
        "whole": rng.integers(-3, 3, n).astype(np.float32),  # integral floats hash as integers
        "f64": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
        "big": rng.choice([2.0 ** 63, -2.0 ** 63, np.inf, 1e300], n),
        "s": rng.choice(["a", "b", None], n), "cat": pd.Categorical(rng.choice(["p", "q"], n)),
        "nullable": pd.array(rng.integers(0, 3, n), dtype="Int64")})


def test_content_hash_equals_the_column_by_column_reference():
    """The chunked hash (numpy uint64 in cache-sized pieces, torch's wrapping int64 sums)
    against the definition: per column, wrapping per-segment sums of the values' images
    salting each value, mixed, summed over the columns (chunks smaller than the log)."""
    df = _mixed_frame(70_001, 0)
    columns = ["item", "f32", "whole", "f64", "big", "s", "cat", "nullable", "f32"]
    segment = df["item"].to_numpy().astype(np.int64)
    expected = np.zeros(len(df), dtype=np.uint64)
    for column in dict.fromkeys(columns):
        bits = hashing._value_bits(df[column])
        signature = np.zeros(segment.max() + 1, dtype=np.uint64)
        np.add.at(signature, segment, bits)
        expected += _mix(bits ^ _mix(signature)[segment])
    np.testing.assert_array_equal(hashing._content_hash(df, columns, segment), expected)


def test_fold_assigner_gives_each_seed_the_folds_of_assign_folds():
    """Seed-free hashes once, every seed after: the folds of separate ``assign_folds`` calls
    (with and without item columns, with units, one fold)."""
    df = _mixed_frame(20_000, 1)
    df = pd.concat([df, df.iloc[:500]], ignore_index=True)  # duplicates: warned once
    segment, t, y = df["item"].to_numpy(), df["t"].to_numpy(), df["y"].to_numpy()
    content = ["item", "f32", "whole", "s", "cat"]
    for options in (dict(item_columns=["item"]), {}, dict(unit=df["s"].fillna("none"))):
        for n_folds in (1, 2, 3):
            assigner = FoldAssigner(df, content, segment, t, y, n_folds, **options)
            for seed in (0, 1, 7):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    np.testing.assert_array_equal(
                        assigner(seed, warn_duplicates=False),
                        assign_folds(df, content, segment, t, y, n_folds, seed, **options))


def test_layout_row_order_is_the_stable_sort_for_any_number_of_cells():
    """Few cells: numpy's 16-bit radix sort; many: torch's stable sort; both keep the rows'
    order within a cell."""
    from causalrec.glm.layout import make_layout
    rng = np.random.default_rng(2)
    for n_cells in (7, 1 << 16, (1 << 16) + 1):
        cells = rng.integers(0, n_cells, 200_000)
        layout = make_layout(cells, n_cells, block_size=8)
        rows = layout.rows[layout.valid].numpy()
        np.testing.assert_array_equal(rows, np.argsort(cells, kind="stable"))
