#!/usr/bin/env bash
# One command for a GPU box (under 8 minutes on one H100/H200 at the default sizes): the CUDA
# tests, the estimator on CUDA against CPU in the same run with each phase's time (validation,
# design spec, fold hashing, layout, transfers, device fits), the text encoder's unique texts/s
# (float32, bfloat16), and one Markdown table to paste into benchmarks/README.md.
#
#   bash benchmarks/gpu_check.sh                          # CUDA, 10M rows x 10k items x d=64
#   DEVICE=cpu ROWS=200000 ITEMS=200 D=16 TEXTS=64 bash benchmarks/gpu_check.sh   # CI, no GPU
#
# Variables: DEVICE (cuda), ROWS (10000000), ITEMS (10000), D (64), TEXTS (20000),
# CPU_BASELINE (1: also time CPU), ALSO (devices after DEVICE, default cpu unless DEVICE is),
# PYTHON (python), OUT_DIR (a fresh temp folder).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
ROWS=${ROWS:-10000000}
ITEMS=${ITEMS:-10000}
D=${D:-64}
TEXTS=${TEXTS:-20000}
CPU_BASELINE=${CPU_BASELINE:-1}
OUT_DIR=${OUT_DIR:-$(mktemp -d)}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT_DIR"
say() { echo "gpu_check: $*" >&2; }

say "CUDA tests (marked cuda, or named cuda: they skip without CUDA)"
"$PYTHON" -m pytest -q -p no:cacheprovider -k cuda tests/estimate/test_estimate.py tests/glm/test_glm.py \
    tests/estimate/test_sharding.py > "$OUT_DIR/tests.txt" 2>&1 || { cat "$OUT_DIR/tests.txt" >&2; exit 1; }
tail -n 1 "$OUT_DIR/tests.txt" >&2

also=${ALSO:-}  # devices timed after DEVICE on the same data (default: cpu after cuda)
if [ -z "${ALSO+x}" ] && [ "$CPU_BASELINE" = 1 ] && [ "$DEVICE" != cpu ]; then also=cpu; fi
say "estimator: $ROWS rows x $ITEMS items x d=$D on $DEVICE${also:+, then $also} (same data, phase profile)"
"$PYTHON" benchmarks/bench_estimator.py --items "$ITEMS" --rows "$ROWS" --d "$D" \
    --device "$DEVICE" --also-devices "$also" --econml-items 0 --profile \
    --json "$OUT_DIR/estimator.json" > /dev/null

say "text encoder: unique texts/s on $DEVICE"
"$PYTHON" benchmarks/bench_text.py --devices "$DEVICE" --dtypes float32,bfloat16 \
    --n-texts "$TEXTS" --bf16-texts "$TEXTS" --no-cache --json "$OUT_DIR/text.json" > /dev/null

"$PYTHON" - "$OUT_DIR" "$OUT_DIR/tests.txt" <<'PY'
import json, sys
from pathlib import Path
out, tests = Path(sys.argv[1]), Path(sys.argv[2])
first = json.loads((out / "estimator.json").read_text())
runs = dict(enumerate([first] + first["also"]))
devices = list(runs)
print(f"gpu_check: {first['items']:,} items x {first['rows']:,} rows x d={first['d']}; "
      f"{first['machine']}; {first.get('gpu', 'no GPU')}; one process, same data")
print(f"CUDA tests: {[l for l in tests.read_text().splitlines() if l.strip()][-1]}")
print()
print("| phase | " + " | ".join(runs[d]["device"] for d in devices) + " |")
print("|---|" + "---|" * len(devices))
for phase in first["phases"]:
    print(f"| {phase} | " + " | ".join(f"{runs[d]['phases'][phase]:.2f} s" for d in devices) + " |")
print("| total (profiled run) | " + " | ".join(f"{runs[d]['profile_seconds']:.2f} s" for d in devices) + " |")
print("| total (unprofiled) | " + " | ".join(f"{runs[d]['seconds']:.2f} s" for d in devices) + " |")
print("| items ok / RMSE | " + " | ".join(f"{runs[d]['items_ok']} / {runs[d]['rmse_all']}" for d in devices) + " |")
print("| peak RSS of the process so far | " + " | ".join(f"{runs[d]['peak_rss_gb']} GB" for d in devices) + " |")
if "peak_gpu_gb" in first:
    print(f"| peak GPU memory | {first['peak_gpu_gb']} GB |" + " |" * (len(devices) - 1))
for r in json.loads((out / "text.json").read_text()):
    print(f"| text encoder {r['device']} {r['dtype']} ({r['texts']:,} unique texts) | "
          f"{r['texts_per_s']:,} texts/s |" + " |" * (len(devices) - 1))
PY
