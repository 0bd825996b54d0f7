"""Embeddings reduced to a few numeric columns: ``TextReducer`` (PCA) and ``TextConfounders``
(encode and reduce every text column of a log, plus pairwise similarities)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..schema import SchemaError, _as_list
from .encoder import TextEncoder


class TextReducer:
    """PCA of embeddings (numpy SVD), optionally weighted by how often each text occurs."""

    def __init__(self, n_components: int = 8):
        self.n_components = n_components

    def fit(self, X, sample_weight=None) -> "TextReducer":
        if not isinstance(self.n_components, (int, np.integer)) or self.n_components < 0:
            raise ValueError(f"n_components must be an integer >= 0, got {self.n_components!r}")
        X = np.asarray(X, dtype=np.float64)
        w = np.ones(len(X)) if sample_weight is None else np.asarray(sample_weight, float)
        w = w / w.sum()
        self.mean_ = w @ X
        _, s, vt = np.linalg.svd((X - self.mean_) * np.sqrt(w)[:, None], full_matrices=False)
        variance = s**2
        total = variance.sum()
        rank = int((variance > 1e-10 * total).sum()) if total > 0 else 0
        k = min(self.n_components, rank)
        # A fixed sign (largest loading positive) makes refits reproducible across platforms.
        signs = np.sign(vt[np.arange(k), np.abs(vt[:k]).argmax(1)])
        self.components_ = vt[:k] * signs[:, None]
        self.explained_variance_ = variance[:k]
        self.explained_variance_ratio_ = variance[:k] / total if total > 0 else variance[:k]
        return self

    def transform(self, X) -> np.ndarray:
        return (np.asarray(X, dtype=np.float64) - self.mean_) @ self.components_.T


class TextConfounders:
    """Text columns -> ``<column>_pc<k>`` numeric confounders (fitted once, reused).

    ``encoder`` is a TextEncoder, a local model path, or None for the default TextEncoder.
    With two or more text columns, ``pair_similarity`` adds the cosine similarity of each
    pair's embeddings (``<a>~<b>_cos``): in a recommender the match between a user's profile
    and an item's description is what drives both exposure and clicks, and one shared slope on
    the match serves every item, including tail items too small for item-specific slopes.
    After ``fit``: ``reducers_`` (column -> TextReducer), ``columns_``, ``feature_names_``,
    ``report_`` (per column: n_rows, n_unique, n_missing, n_truncated, n_components,
    explained_variance).
    """

    def __init__(self, encoder=None, n_components: int = 8, pair_similarity: bool = True):
        self.encoder = encoder
        self.n_components = n_components
        self.pair_similarity = pair_similarity

    def fit(self, df: pd.DataFrame, columns) -> "TextConfounders":
        self.fit_transform(df, columns)
        return self

    def fit_transform(self, df: pd.DataFrame, columns) -> pd.DataFrame:
        self.columns_ = _as_list(columns)
        self.encoder_ = (self.encoder if isinstance(self.encoder, TextEncoder)
                         else TextEncoder(model=self.encoder))
        self.reducers_ = {}
        return self._scores(df, fit=True)

    def transform(self, df: pd.DataFrame) -> pd.DataFrame:
        if not hasattr(self, "reducers_"):
            raise RuntimeError("TextConfounders is not fitted: call fit first")
        return self._scores(df)

    @property
    def feature_names_(self) -> list[str]:
        return [f"{col}_pc{k}" for col in self.columns_
                for k in range(len(self.reducers_[col].components_))] + self._pair_names()

    @property
    def pairs_(self) -> list[tuple[str, str]]:
        """The pairs of text columns whose embeddings' cosine is a feature."""
        cols = self.columns_ if self.pair_similarity else []
        return [(a, b) for i, a in enumerate(cols) for b in cols[i + 1:]]

    def _pair_names(self) -> list[str]:
        return [f"{a}~{b}_cos" for a, b in self.pairs_]

    def _scores(self, df: pd.DataFrame, fit: bool = False) -> pd.DataFrame:
        parts, report, embedded = [], [], {}
        for col in self.columns_:
            if col not in df.columns:
                raise SchemaError(col, "text column missing from the data")
            emb, codes = self.encoder_.encode_unique(df[col], column=col)
            embedded[col] = emb, codes
            if fit:
                # Weighting unique texts by their row counts = PCA over rows, in m x d memory.
                reducer = TextReducer(self.n_components).fit(
                    emb, sample_weight=np.bincount(codes, minlength=len(emb)))
                self.reducers_[col] = reducer
                counts = self.encoder_.report_
                report.append(dict(
                    column=col, n_rows=len(codes), n_unique=len(emb),
                    n_missing=counts["n_missing"], n_truncated=counts["n_truncated"],
                    n_components=len(reducer.components_),
                    explained_variance=float(reducer.explained_variance_ratio_.sum())))
            scores = self.reducers_[col].transform(emb)[codes]
            parts.append(pd.DataFrame(scores, index=df.index,
                                      columns=[f"{col}_pc{k}" for k in range(scores.shape[1])]))
        for (a, b), name in zip(self.pairs_, self._pair_names()):
            parts.append(pd.DataFrame({name: _row_cosine(*embedded[a], *embedded[b])},
                                      index=df.index))
        if fit:
            self.report_ = pd.DataFrame(report).set_index("column")
        return pd.concat(parts, axis=1) if parts else pd.DataFrame(index=df.index)


def _row_cosine(emb_a, codes_a, emb_b, codes_b, chunk: int = 65_536) -> np.ndarray:
    """Per-row dot product of two L2-normalised embeddings, without an n x 384 matrix."""
    out = np.empty(len(codes_a), dtype=np.float64)
    for start in range(0, len(out), chunk):
        rows = slice(start, start + chunk)
        out[rows] = np.einsum("ij,ij->i", emb_a[codes_a[rows]], emb_b[codes_b[rows]])
    return out
