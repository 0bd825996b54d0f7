"""Text encoder throughput: unique texts per second (fp32 / bf16, CPU / GPU) and the cache.

    .venv/bin/python benchmarks/bench_text.py [--n-texts 2000] [--lookup 100000]

Texts are synthetic user profiles of 5-40 words (seeded), all distinct. Timings are wall
clock of ``TextEncoder.encode`` after the model is loaded (one warm-up call first).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from causalrec.confounders import TextEncoder
from causalrec.confounders.cache import _EmbeddingCache, _text_keys

WORDS = ("football cooking jazz travel gaming gardening history movies running science "
         "fashion cars photography yoga chess poetry hiking coffee anime podcasts night "
         "student retired parent engineer nurse teacher weekend daily tablet phone").split()


def make_texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"user {i}: " + " ".join(rng.choice(WORDS, size=rng.integers(5, 41)))
            for i in range(n)]


def rate(encoder: TextEncoder, texts: list[str]) -> tuple[float, float]:
    """Unique texts per wall-clock second and per CPU second (all threads; steadier when
    other processes share the machine)."""
    encoder.encode(texts[:8])  # load the model and warm up kernels outside the timing
    wall, cpu = time.perf_counter(), time.process_time()
    encoder.encode(texts[8:])
    n = len(texts) - 8
    return n / (time.perf_counter() - wall), n / (time.process_time() - cpu)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-texts", type=int, default=2000)
    parser.add_argument("--bf16-texts", type=int, default=500)
    parser.add_argument("--lookup", type=int, default=100_000)
    parser.add_argument("--devices", default="auto",
                        help="comma-separated devices (default: cpu, and cuda if present)")
    parser.add_argument("--dtypes", default="float32,bfloat16",
                        help="comma-separated dtypes (float32, bfloat16, float16)")
    parser.add_argument("--no-cache", action="store_true", help="skip the cache timings")
    parser.add_argument("--json", help="write the encoder rates here")
    args = parser.parse_args(argv)
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, load avg {os.getloadavg()[0]:.1f}, "
          f"torch {torch.__version__}")
    texts = make_texts(args.n_texts)
    devices = (["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
               if args.devices == "auto" else args.devices.split(","))
    rates = []
    for device in devices:
        for dtype in args.dtypes.split(","):
            n = args.n_texts if dtype == "float32" else args.bf16_texts
            enc = TextEncoder(device=device, dtype=dtype, cache_dir=False, progress=False)
            per_wall, per_cpu = rate(enc, texts[:n])
            rates.append(dict(device=device, dtype=dtype, texts=n, texts_per_s=round(per_wall),
                              texts_per_cpu_s=round(per_cpu), batch=enc.batch_size))
            print(f"{device} {dtype}: {per_wall:.0f} unique texts/s, {per_cpu:.0f} per CPU-s "
                  f"({n} texts, batch {enc.batch_size})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rates, fh, indent=2)
    if args.no_cache:
        return

    with tempfile.TemporaryDirectory() as tmp:
        first = TextEncoder(dtype="float32", cache_dir=tmp, progress=False)
        first.encode(texts[:8])
        t0 = time.perf_counter()
        first.encode(texts)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        TextEncoder(dtype="float32", cache_dir=tmp, progress=False).encode(texts)
        warm = time.perf_counter() - t0
        print(f"cached re-run of {len(texts)} texts: {cold:.2f} s -> {warm:.3f} s "
              f"(x{cold / warm:.0f}, fresh encoder, model not loaded)")

        # Cache lookups at scale: fill a namespace with random vectors (lookups do not look
        # at the values), then time one encoder call served entirely from the cache.
        many = make_texts(args.lookup, seed=1)
        probe = TextEncoder(dtype="float32", cache_dir=tmp)
        cache = _EmbeddingCache(Path(tmp) / probe._cache_namespace())
        vectors = np.random.default_rng(2).normal(size=(len(many), 384)).astype(np.float32)
        t0 = time.perf_counter()
        cache.put(_text_keys(many), vectors, np.zeros(len(many), bool))
        write = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = probe.encode(many)
        read = time.perf_counter() - t0
        assert probe.report_["n_cached"] == len(many) and np.array_equal(got, vectors)
        print(f"cache of {len(many)} texts: write {write:.2f} s, "
              f"lookup via encode() {read:.2f} s ({len(many) / read:.0f} texts/s)")


if __name__ == "__main__":
    main()
