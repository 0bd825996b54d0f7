"""Text confounders of a Spark frame: the unique texts of each column embedded on the executors
(the package's ``TextEncoder``, its on-disk cache per executor), the PCA (``TextReducer``)
fitted on the driver from the unique texts' embeddings weighted by their row counts, and the
components (and pairwise cosines) joined back by text, so that they are numeric columns of
the frame before stage 0. Equal to ``TextConfounders`` on the pandas log whenever the unique
texts fit the driver sample (``max_sample``, default 100,000 per column); beyond it the PCA
is fitted on the ``max_sample`` unique texts of smallest seeded hash (deterministic, whatever
the partitioning), weighted by their row counts."""
from __future__ import annotations

import inspect
import os

import numpy as np
import pandas as pd

from ..confounders import TextConfounders, TextEncoder, TextReducer
from ..confounders.reduce import _row_cosine
from ..confounders.cache import MISSING_TEXT, _clean_texts
from ..schema import _as_list

__all__ = ["text_features", "MAX_SAMPLE"]

MAX_SAMPLE = 100_000  # unique texts per column collected for the PCA (~150 MB at 384-d)
_KEY, _FIRST, _N, _EMB = "__causalrec_text", "__causalrec_first", "__causalrec_n", "__causalrec_emb"
_ENCODERS: dict = {}  # per executor process: one loaded model per encoder setting


def _F():
    from pyspark.sql import functions as F
    return F


def _encoder_params(encoder) -> dict:
    enc = encoder if isinstance(encoder, TextEncoder) else TextEncoder(model=encoder)
    return {p: getattr(enc, p) for p in inspect.signature(TextEncoder).parameters}


def _executor_encoder(params: dict) -> TextEncoder:
    """The encoder of this Python worker (loaded once, reused by later tasks): offline only."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    key = repr(sorted(params.items()))
    if key not in _ENCODERS:
        _ENCODERS[key] = TextEncoder(**{**params, "progress": False})
    return _ENCODERS[key]


def _embed_task(params: dict, column: str):
    """mapInPandas: batches of (raw text, first row id, rows) -> + the text's embedding."""
    def run(batches):
        encoder = _executor_encoder(params)
        for batch in batches:
            if not len(batch):
                continue
            emb, codes = encoder.encode_unique(batch[_KEY], column=column)
            cleaned, _ = _clean_texts(batch[_KEY], column)
            yield batch.assign(**{"__causalrec_clean": cleaned.astype(str), _EMB: list(emb[codes])})
    return run


def _embedded(sdf, column: str, params: dict, row_id: str):
    """One row per distinct raw text of ``column`` (null included): its first row id, row
    count, cleaned text (as the encoder keys it) and float32 embedding (persisted)."""
    F = _F()
    distinct = sdf.groupBy(F.col(column).alias(_KEY)).agg(
        F.min(row_id).alias(_FIRST), F.count(F.lit(1)).alias(_N))
    schema = (f"{_KEY} string, {_FIRST} long, {_N} long, __causalrec_clean string, "
              f"{_EMB} array<float>")
    return distinct.mapInPandas(_embed_task(params, column), schema).persist()


def _fit_reducer(embedded, n_components: int, max_sample: int, seed: int):
    """TextReducer of the unique cleaned texts in first-appearance order (the local
    ``pd.factorize`` order), weighted by rows: all of them, or a seeded hash sample."""
    F = _F()
    per_text = embedded.groupBy("__causalrec_clean").agg(
        F.min(_FIRST).alias(_FIRST), F.sum(_N).alias(_N), F.first(_EMB).alias(_EMB))
    facts = per_text.agg(F.count(F.lit(1)).alias("u"), F.sum(F.when(
        F.col("__causalrec_clean") == MISSING_TEXT, F.col(_N)).otherwise(0)).alias("m")).first()
    n_unique, missing = int(facts["u"]), int(facts["m"] or 0)
    if n_unique > max_sample:
        per_text = per_text.orderBy(F.xxhash64("__causalrec_clean", F.lit(seed))).limit(max_sample)
    local = per_text.toPandas().sort_values(_FIRST, kind="stable")
    emb = np.stack(local[_EMB].to_numpy()).astype(np.float32)
    reducer = TextReducer(n_components).fit(emb, sample_weight=local[_N].to_numpy(np.float64))
    return reducer, n_unique, missing


def _scores_task(reducer: TextReducer, names: list[str]):
    def run(batches):
        for batch in batches:
            scores = reducer.transform(np.stack(batch[_EMB].to_numpy()).astype(np.float32)) \
                if len(batch) else np.zeros((0, len(names)))
            out = pd.DataFrame(scores, columns=names)
            out.insert(0, _KEY, batch[_KEY].to_numpy(dtype=object))
            yield out
    return run


def _cosine_task(name: str):
    def run(batches):
        for batch in batches:
            a = np.stack(batch["__causalrec_ea"].to_numpy()).astype(np.float32) if len(batch) \
                else np.zeros((0, 1), np.float32)
            b = np.stack(batch["__causalrec_eb"].to_numpy()).astype(np.float32) if len(batch) \
                else np.zeros((0, 1), np.float32)
            codes = np.arange(len(batch))
            yield pd.DataFrame({"__causalrec_a": batch["__causalrec_a"].to_numpy(dtype=object),
                                "__causalrec_b": batch["__causalrec_b"].to_numpy(dtype=object),
                                name: _row_cosine(a, codes, b, codes)})
    return run


def _materialised(table, keep: list):
    """``table`` persisted and computed now: each stage-0 aggregation then re-runs only the
    joins, not the Python tasks that made it."""
    table = table.persist()
    table.count()
    keep.append(table)
    return table


def _join_by(sdf, table, pairs):
    """``sdf`` left-joined with ``table`` on null-safe equality of (sdf column, table key)."""
    F = _F()
    cond = None
    for col, key in pairs:
        c = F.col(col).eqNullSafe(F.col(key))
        cond = c if cond is None else cond & c
    return sdf.join(table, on=cond, how="left").drop(*[key for _, key in pairs])


def text_features(sdf, text, *, encoder=None, n_components: int = 8,
                  pair_similarity: bool = True, row_id: str, max_sample: int = MAX_SAMPLE,
                  seed: int = 0):
    """(``sdf`` with the text components as columns ``__causalrec_x<j>``, those column names,
    their local names ``<column>_pc<k>`` / ``<a>~<b>_cos``, a fitted ``TextConfounders``
    whose ``reducers_`` and ``report_`` describe the fit). ``row_id`` orders the texts."""
    F = _F()
    text = _as_list(text)
    params = _encoder_params(encoder)
    fitted = TextConfounders(encoder=TextEncoder(**params), n_components=n_components,
                             pair_similarity=pair_similarity)
    fitted.columns_, fitted.encoder_, fitted.reducers_ = text, fitted.encoder, {}
    n_rows = sdf.count()
    embedded, report, out, keep = {}, [], sdf, []
    n_columns = 0  # design columns made so far (their temporary names are numbered)
    for col in text:
        embedded[col] = _embedded(sdf, col, params, row_id)
        reducer, n_unique, n_missing = _fit_reducer(embedded[col], n_components, max_sample, seed)
        fitted.reducers_[col] = reducer
        report.append(dict(column=col, n_rows=n_rows, n_unique=n_unique, n_missing=n_missing,
                           n_components=len(reducer.components_),
                           explained_variance=float(reducer.explained_variance_ratio_.sum())))
        safe = [f"__causalrec_x{n_columns + k}" for k in range(len(reducer.components_))]
        schema = ", ".join([f"{_KEY} string"] + [f"{s} double" for s in safe])
        scores = _materialised(embedded[col].select(_KEY, _EMB).mapInPandas(
            _scores_task(reducer, safe), schema), keep)
        out = _join_by(out, scores, [(col, _KEY)])
        n_columns += len(safe)
    for a, b in fitted.pairs_:
        name = f"__causalrec_x{n_columns}"
        pairs = (sdf.select(F.col(a).alias("__causalrec_a"), F.col(b).alias("__causalrec_b"))
                 .distinct())
        for side, col in (("a", a), ("b", b)):
            emb = embedded[col].select(F.col(_KEY).alias(f"__causalrec_k{side}"),
                                       F.col(_EMB).alias(f"__causalrec_e{side}"))
            pairs = pairs.join(emb, on=F.col(f"__causalrec_{side}").eqNullSafe(
                F.col(f"__causalrec_k{side}")), how="left").drop(f"__causalrec_k{side}")
        cos = _materialised(pairs.mapInPandas(
            _cosine_task(name), f"__causalrec_a string, __causalrec_b string, {name} double"), keep)
        out = _join_by(out, cos, [(a, "__causalrec_a"), (b, "__causalrec_b")])
        n_columns += 1
    for frame in embedded.values():  # the embeddings are no longer needed: scores are kept
        frame.unpersist()
    fitted.report_ = pd.DataFrame(report).set_index("column")
    fitted.persisted_ = keep  # per-text scores and pair cosines (unpersist when done)
    local_names = fitted.feature_names_  # the local path's names, in the same order
    safe = [f"__causalrec_x{j}" for j in range(n_columns)]
    return out, safe, local_names, fitted
