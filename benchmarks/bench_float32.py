"""float32 against float64 for offset and scaled outcomes and confounders, every nuisance.

For each nuisance option and each change of units (an offset or a factor on the continuous
outcome, or on confounders), the largest |estimate in float32 - estimate in float64| / SE
over the items ``ok`` under both, on a simulated log of 20 items and 10,000 rows
(``simulate_log(outcome="continuous", seed=3)``). Results in benchmarks/README.md.

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/bench_float32.py
"""
import warnings

import torch
from sklearn.linear_model import LogisticRegression, Ridge

from causalrec.datasets import simulate_log
from causalrec.estimate import estimate_item_effects

CASES = {
    "y+1e8": lambda d, y: d.assign(**{y: d[y] + 1e8}),
    "y*1e6": lambda d, y: d.assign(**{y: d[y] * 1e6}),
    "y*1e-6": lambda d, y: d.assign(**{y: d[y] * 1e-6}),
    "x+1e8": lambda d, y: d.assign(user_activity=d.user_activity + 1e8, hour=d.hour + 1e8),
    "x*1e6": lambda d, y: d.assign(user_activity=d.user_activity * 1e6),
    "x*1e-6": lambda d, y: d.assign(user_activity=d.user_activity * 1e-6),
    "none": lambda d, y: d,
}
NUISANCES = {"pooled": "pooled", "per_item": "per_item", "boosted": "boosted",
             "factorised": "factorised", "auto": "auto",
             "sklearn": (LogisticRegression(max_iter=300), Ridge())}


def dtype_gap(data, roles, nuisance) -> float:
    tables = {dt: estimate_item_effects(data, **roles, dtype=dt, nuisance=nuisance)
              .set_index("item") for dt in ("float32", "float64")}
    ok = (tables["float32"].status == "ok") & (tables["float64"].status == "ok")
    gap = (tables["float32"].ate - tables["float64"].ate).abs() / tables["float64"].se
    return float(gap[ok].max())


def main() -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    sim = simulate_log(n_items=20, n_rows=10_000, outcome="continuous", seed=3)
    roles = {**sim.roles, "text": None}
    print("max |float32 - float64| / SE")
    print(f"{'nuisance':11s}" + "".join(f"{case:>9s}" for case in CASES))
    for name, nuisance in NUISANCES.items():
        gaps = [dtype_gap(change(sim.data, roles["outcome"]), roles, nuisance)
                for change in CASES.values()]
        print(f"{name:11s}" + "".join(f"{g:9.2g}" for g in gaps), flush=True)


if __name__ == "__main__":
    main()
