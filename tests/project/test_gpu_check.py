"""benchmarks/gpu_check.sh runs end to end on CPU at tiny sizes and prints its table."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_runs_on_cpu(tmp_path):
    env = {**os.environ, "DEVICE": "cpu", "ROWS": "20000", "ITEMS": "40", "D": "4",
           "TEXTS": "16", "ALSO": "cpu", "PYTHON": sys.executable, "OUT_DIR": str(tmp_path),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("gpu_check: 40 items x 20,000 rows x d=4")
    table = {line.split(" | ")[0].strip("| "): line for line in lines if line.startswith("| ")}
    for phase in ("validation", "design spec", "fold hashing", "layout",
                  "host-device transfers", "nuisance fits (device)", "effects table",
                  "total (unprofiled)"):
        assert phase in table, done.stdout
    # two columns (DEVICE, then ALSO on the same data): every simulated item estimated, and
    # the same RMSE on both runs
    assert table["items ok / RMSE"].count("40 / ") == 2
    rmse = [cell.split("/")[1].strip() for cell in table["items ok / RMSE"].split("|")[2:4]]
    assert rmse[0] == rmse[1]
    for dtype in ("float32", "bfloat16"):
        assert f"text encoder cpu {dtype} (16 unique texts)" in table
    # exclusive phase times are non-negative (nested phases are not counted twice)
    for phase in ("validation", "design spec", "fold hashing", "layout", "effects table"):
        assert float(table[phase].split("|")[2].split()[0]) >= 0.0
