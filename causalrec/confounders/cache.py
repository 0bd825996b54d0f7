"""Texts as cache keys, and the on-disk cache of their embeddings (sharded by key, written
atomically, so that re-running an analysis does not re-encode)."""
from __future__ import annotations

import hashlib
import uuid
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..exceptions import DataWarning
from ..schema import SchemaError
from ..utils.io import atomic_path

MISSING_TEXT = "[missing]"  # what NaN / None / blank texts are encoded as


def _clean_texts(texts, column: str | None) -> tuple[np.ndarray, int]:
    """Texts as an object array of str, missing ones replaced by MISSING_TEXT; n missing."""
    if isinstance(texts, str):
        raise TypeError("expected a sequence of texts, got a single string")
    # always a fresh array: to_numpy may return a view of the caller's data (pandas 2) or a
    # read-only one (pandas 3), and missing texts are written into it below
    values = np.array(texts.to_numpy(dtype=object) if isinstance(texts, (pd.Series, pd.Index))
                      else list(texts), dtype=object, copy=True)
    missing = pd.isna(values) | np.array([isinstance(v, str) and not v.strip() for v in values],
                                         dtype=bool)
    wrong = [v for v, m in zip(values, missing) if not m and not isinstance(v, str)]
    if wrong:
        raise SchemaError(column or "texts", f"text column holds {len(wrong)} non-string values, "
                          f"e.g. {wrong[0]!r} ({type(wrong[0]).__name__})")
    values[missing] = MISSING_TEXT
    return values, int(missing.sum())


def _text_keys(texts, column: str | None = None) -> np.ndarray:
    keys = []
    for t in texts:
        try:
            keys.append(hashlib.blake2b(t.encode("utf-8"), digest_size=16).hexdigest())
        except UnicodeEncodeError as exc:  # a lone surrogate: not text any model can read
            raise SchemaError(column or "texts", f"text {t[:40]!r} is not valid Unicode "
                              f"({exc.reason} at position {exc.start}); clean or drop it") from None
    return np.array(keys, dtype="S32")


class _EmbeddingCache:
    """Embeddings on disk, sharded by the first two hex digits of the text hash.

    Each write adds an immutable chunk ``<shard>/<uuid>.npz`` (keys, embeddings, truncated
    flags), written to a temporary name then renamed, so concurrent writers never clash and
    readers never see a partial file. Unreadable chunks are skipped (their texts are simply
    encoded again). A shard with many chunks is compacted into one by the next writer.
    """

    max_chunks = 16

    def __init__(self, root: Path, width: int | None = None):
        self.root = root
        self.width = width  # the model's embedding width, when known

    def _valid(self, keys, emb, truncated) -> str | None:
        """Why a chunk's arrays cannot be cache entries, or None. Embeddings are finite,
        float32, L2-normalised rows of the model's width."""
        if keys.ndim != 1 or keys.dtype != np.dtype("S32"):
            return f"keys of dtype {keys.dtype} and shape {keys.shape}"
        if emb.ndim != 2 or emb.dtype != np.float32 or len(emb) != len(keys):
            return f"embeddings of dtype {emb.dtype} and shape {emb.shape} for {len(keys)} keys"
        if self.width is not None and emb.shape[1] != self.width:
            return f"embeddings {emb.shape[1]} wide, the model's are {self.width}"
        if truncated.shape != keys.shape or truncated.dtype != bool:
            return f"truncated flags of dtype {truncated.dtype} and shape {truncated.shape}"
        if not np.isfinite(emb).all():
            return "NaN or infinite embeddings"
        norms = np.sqrt(np.square(emb, dtype=np.float64).sum(1))
        if len(norms) and np.abs(norms - 1).max() > 1e-3:
            return "embeddings that are not unit length"
        return None

    @staticmethod
    def _by_shard(keys: np.ndarray):
        shards, inverse = np.unique(keys.astype("S2"), return_inverse=True)
        for i, shard in enumerate(shards):
            yield shard.decode(), np.flatnonzero(inverse == i)

    def _read(self, shard: str, paths=None):
        """(sorted unique keys, embeddings, truncated flags, chunk paths read) or None."""
        parts = []
        for path in sorted((self.root / shard).glob("*.npz")) if paths is None else paths:
            try:
                with np.load(path, allow_pickle=False) as z:
                    part = (z["keys"], z["emb"], z["truncated"], path)
            except Exception:  # corrupt, truncated, or removed by a concurrent compaction
                continue
            problem = self._valid(*part[:3])
            if problem is None and parts and part[1].shape[1] != parts[0][1].shape[1]:
                problem = f"embeddings {part[1].shape[1]} wide, other chunks' {parts[0][1].shape[1]}"
            if problem is None:
                parts.append(part)
                continue
            # chunks are complete once renamed into place, so this one is bad for good
            warnings.warn(f"embedding cache chunk {path} skipped and removed ({problem}); its "
                          "texts are encoded again", DataWarning, stacklevel=4)
            path.unlink(missing_ok=True)
        if not parts:
            return None
        keys, first = np.unique(np.concatenate([p[0] for p in parts]), return_index=True)
        emb, truncated = (np.concatenate([p[i] for p in parts])[first] for i in (1, 2))
        return keys, emb, truncated, [p[3] for p in parts]

    def get(self, keys: np.ndarray):
        """(embeddings or None, found mask, truncated flags) for ``keys``."""
        found, truncated, emb = np.zeros(len(keys), bool), np.zeros(len(keys), bool), None
        for shard, rows in self._by_shard(keys):
            stored = self._read(shard)
            if stored is None:
                continue
            stored_keys, stored_emb, stored_trunc, _ = stored
            if emb is not None and stored_emb.shape[1] != emb.shape[1]:
                continue  # (only when the model's width is unknown) encoded again
            pos = np.minimum(np.searchsorted(stored_keys, keys[rows]), len(stored_keys) - 1)
            hit = stored_keys[pos] == keys[rows]
            if emb is None:
                emb = np.empty((len(keys), stored_emb.shape[1]), np.float32)
            rows, pos = rows[hit], pos[hit]
            emb[rows], truncated[rows], found[rows] = stored_emb[pos], stored_trunc[pos], True
        return emb, found, truncated

    def put(self, keys: np.ndarray, emb: np.ndarray, truncated: np.ndarray) -> None:
        for shard, rows in self._by_shard(keys):
            self._write(shard, keys[rows], emb[rows], truncated[rows])
            chunks = sorted((self.root / shard).glob("*.npz"))
            merged = self._read(shard, chunks) if len(chunks) > self.max_chunks else None
            if merged is not None:
                self._write(shard, *merged[:3])
                for path in merged[3]:
                    path.unlink(missing_ok=True)

    def _write(self, shard: str, keys, emb, truncated) -> None:
        with atomic_path(self.root / shard / f"{uuid.uuid4().hex}.npz") as tmp, \
                open(tmp, "wb") as f:
            np.savez(f, keys=keys, emb=np.asarray(emb, np.float32), truncated=truncated)
