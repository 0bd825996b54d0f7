"""The ``causalrec`` command line: effects, report, audit, simulate and demo.

Errors a user can fix (a missing file, a wrong column, a bad flag) print one line
``causalrec: error: ...`` to stderr and exit non-zero (2 for usage, 1 otherwise). Heavy
modules (torch, matplotlib) are imported only by the commands that need them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

__all__ = ["main", "build_parser"]

PROG = "causalrec"
USAGE_ERROR, RUNTIME_ERROR = 2, 1


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage block) and exits with 2."""

    def error(self, message):
        _fail(f"{message} (see '{self.prog} --help')")
        raise SystemExit(USAGE_ERROR)


class _Progress:
    """Progress lines on stderr; silent with --quiet."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    def say(self, message: str) -> None:
        if not self.quiet:
            print(f"{PROG}: {message}", file=sys.stderr, flush=True)

    @contextmanager
    def step(self, message: str):
        self.say(f"{message} ...")
        start = time.perf_counter()
        yield
        self.say(f"{message}: done in {time.perf_counter() - start:.1f} s")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings about the data as one line each, like errors (no source lines)."""
    print(f"{PROG}: warning: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


def _fail(message: str) -> None:
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


def _columns(value: str) -> list[str]:
    """A comma-separated list of column names."""
    return [c.strip() for c in value.split(",") if c.strip()]


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


# ----------------------------------------------------------------- parser
_EXAMPLES = """examples:
  causalrec demo                          report on the bundled sample, in out/demo
  causalrec simulate --out sim            a log with known effects, in sim/log.csv
  causalrec report sim/log.csv --item item_id --treatment recommended --outcome clicked \\
      --confounders user_activity,hour,tenure --categorical device,user_group --out sim/report
"""


def _add_estimation_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", default="aipw", help="aipw (default), ipw or or")
    parser.add_argument("--nuisance", default="pooled",
                        help="pooled (default), per_item, boosted (XGBoost), factorised or auto")
    parser.add_argument("--folds", type=_positive_int, default=2, help="cross-fitting folds")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda")
    parser.add_argument("--dtype", default="float32",
                        help="float32 (default) or float64 (slower, more exact)")
    parser.add_argument("--seed", type=int, default=0, help="seed of folds and checks")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


def _add_log_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("log", metavar="LOG", help="the log, a .csv or .parquet file")
    parser.add_argument("--item", required=True, help="item column")
    parser.add_argument("--treatment", required=True, help="0/1 column: item recommended")
    parser.add_argument("--outcome", required=True, help="outcome column (click, minutes)")
    parser.add_argument("--confounders", type=_columns, default=[], metavar="A,B",
                        help="numeric confounder columns")
    parser.add_argument("--categorical", type=_columns, default=[], metavar="C,D",
                        help="categorical confounder columns")
    parser.add_argument("--text", type=_columns, default=[], metavar="T",
                        help="free-text confounder columns (embedded offline with BERT)")
    parser.add_argument("--propensity", help="column of logged recommendation probabilities")
    parser.add_argument("--encoding", default="utf-8",
                        help="text encoding of a CSV log (default utf-8; e.g. latin-1, cp1252)")
    parser.add_argument("--graph", help="causal graph (.gml, see CausalGraph.to_gml); its "
                                        "adjustment set is added to the confounders")
    _add_estimation_flags(parser)


def _add_spark_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spark", nargs="?", const="local[*]", metavar="MASTER",
                        help="read the Parquet log (a file or folder) with Spark and run "
                             "there: a master URL (default local[*]) or sc://host:port for "
                             "Spark Connect; needs the spark extra")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
                     description="What does recommending an item actually cause? "
                     "Per-item causal effects from logged recommendations.",
                     epilog=_EXAMPLES)
    from . import __version__
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    effects = commands.add_parser("effects", help="estimate every item's effect to a table")
    _add_log_flags(effects)
    effects.add_argument("--out", required=True, help="output table, .csv or .parquet")
    _add_spark_flag(effects)
    effects.set_defaults(func=_cmd_effects)

    report = commands.add_parser("report", help="effects, ranking and a self-contained HTML report")
    _add_log_flags(report)
    report.add_argument("--out", required=True, help="output folder")
    report.add_argument("--refute", action="store_true",
                        help="also run refutation checks (placebo, random cause, subsets)")
    report.add_argument("--title", default="Causal effects of recommendations")
    report.add_argument("--top", type=_positive_int, default=10, help="items shown per end")
    _add_spark_flag(report)
    report.set_defaults(func=_cmd_report)

    audit = commands.add_parser("audit", help="fairness audit of effects across user groups")
    _add_log_flags(audit)
    audit.add_argument("--group", required=True, help="sensitive user-group column")
    audit.add_argument("--provider", help="item-provider column")
    audit.add_argument("--out", required=True, help="output folder")
    _add_spark_flag(audit)
    audit.set_defaults(func=_cmd_audit)

    simulate = commands.add_parser("simulate", help="write a simulated log with known effects")
    simulate.add_argument("--out", required=True, help="output folder")
    simulate.add_argument("--items", type=_positive_int, default=200)
    simulate.add_argument("--rows", type=_positive_int, default=40_000)
    simulate.add_argument("--users", type=_positive_int, default=2000)
    simulate.add_argument("--outcome", choices=("binary", "continuous"), default="binary")
    simulate.add_argument("--format", choices=("csv", "parquet"), default="csv")
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    simulate.set_defaults(func=_cmd_simulate)

    demo = commands.add_parser("demo", help="report on the bundled sample log")
    demo.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    demo.add_argument("--refute", action="store_true", help="also run refutation checks")
    demo.add_argument("--no-text", action="store_true",
                      help="skip the user-profile text confounder (faster, but biased)")
    _add_estimation_flags(demo)
    demo.set_defaults(func=_cmd_demo)
    return parser


# ----------------------------------------------------------------- shared steps
def _estimator(args):
    from .estimate import ItemEffectEstimator

    _check_device(args.device)
    estimator = ItemEffectEstimator(method=args.method, nuisance=args.nuisance,
                                    n_folds=args.folds, device=args.device, seed=args.seed,
                                    dtype=args.dtype)
    estimator._validate_params()  # fail on a bad flag now, not after minutes of fitting
    return estimator


def _options(args) -> dict:
    return dict(method=args.method, nuisance=args.nuisance, n_folds=args.folds,
                device=args.device, seed=args.seed, dtype=args.dtype)


def _check_device(device: str) -> None:
    """--device names a device this machine has (torch only asserts, deep inside a fit)."""
    import torch

    try:
        kind = torch.device(device).type if device != "auto" else "cpu"
    except RuntimeError:
        raise ValueError(f"--device must be auto, cpu or cuda[:N], got {device!r}") from None
    if kind == "cuda":
        index = torch.device(device).index or 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: no such CUDA device on this machine "
                             "(use --device cpu or auto)")
    elif kind != "cpu":
        raise ValueError(f"--device must be auto, cpu or cuda[:N], got {device!r}")


def _roles(args) -> dict:
    return dict(item=args.item, treatment=args.treatment, outcome=args.outcome,
                confounders=list(args.confounders), categorical=list(args.categorical),
                text=list(args.text), propensity=args.propensity)


def _read(args, progress):
    """The log and its column roles (graph adjustment columns included), validated."""
    from .schema import InteractionLog, read_log

    with progress.step(f"reading {args.log}"):
        df = read_log(args.log, encoding=args.encoding)
    roles = _roles(args)
    graph = None
    if getattr(args, "graph", None):
        import networkx as nx

        from .identify import CausalGraph, GraphError

        if not Path(args.graph).exists():
            raise FileNotFoundError(f"no such graph file: {args.graph}")
        try:
            graph = CausalGraph.from_gml(args.graph, treatment=args.treatment,
                                         outcome=args.outcome)
        except nx.NetworkXError as exc:  # a malformed GML file
            raise GraphError(f"cannot read the graph {args.graph}: {exc}") from None
        roles.update(graph.merge_adjustment(df, roles["confounders"], roles["categorical"],
                                            roles["text"]))
    log = InteractionLog(df, **roles)
    progress.say(f"{len(df):,} rows, {df[args.item].nunique():,} items")
    return log, roles, graph


def _fit(estimator, log, progress):
    with progress.step("estimating effects"):
        return estimator.fit(log)


def _recommendation_graph(roles: dict):
    """The standard exposure graph over the adjustment columns (user_* columns as users)."""
    from .identify import CausalGraph

    features = roles["confounders"] + roles["categorical"]
    return CausalGraph.recommendation(
        roles["treatment"], roles["outcome"], text=roles["text"],
        user=[c for c in features if str(c).startswith("user")],
        context=[c for c in features if not str(c).startswith("user")])


def _report(estimator, roles, graph, args, progress, title, top=10, refute=False, data=None):
    """Sensitivity and optional refutation; the report ranks the items itself. ``estimator``
    is fitted, or an effects table (the Spark path) with its log ``data``."""
    from .refute import refute_item_effects, sensitivity
    from .reporting import EffectReport

    effects = estimator.effects_ if hasattr(estimator, "effects_") else estimator
    robustness = sensitivity(effects)
    refutation = None
    if refute:
        checks = "placebo, random common cause" + ("" if data is not None else ", subsets")
        with progress.step(f"refutation checks ({checks})"):
            refutation = refute_item_effects(estimator.log_.data if data is None else data,
                                             **roles, seed=args.seed,
                                             method=args.method, nuisance=args.nuisance,
                                             n_folds=args.folds, device=args.device,
                                             dtype=args.dtype)
    return EffectReport(estimator, graph=graph or _recommendation_graph(roles),
                        refutation=refutation, sensitivity=robustness, title=title, top=top,
                        seed=args.seed)


def _check_table_path(path: Path) -> None:
    if path.suffix.lower() not in {".csv", ".parquet", ".pq"}:
        raise ValueError(f"--out must end in .csv or .parquet, got {path.name!r}")


def _write_table(frame, path: Path) -> None:
    from .schema import csv_safe

    _check_table_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        csv_safe(frame).to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)


def _print_summary(table, path: Path, truth=None) -> None:
    """A few lines on stdout: where the report is, the top items, the naive overlap."""
    ok = table[table["status"] == "ok"]
    print(f"Report: {path.resolve()}")
    counts = ", ".join(f"{k} {v}" for k, v in table["status"].value_counts().items())
    print(f"Items: {len(table)} ({counts})")
    if "rank" not in table.columns:
        return
    print(f"Helping at FDR 10%: {int(table['bh_positive'].sum())}, "
          f"hurting: {int(table['bh_negative'].sum())}")
    top = ok.sort_values("rank").head(5)
    print("Top items by causal effect (shrunk, 95% interval):")
    for row in top.itertuples():
        print(f"  {row.rank:>3.0f}. {row.item}: {row.posterior_mean:+.4f} "
              f"[{row.posterior_low:+.4f}, {row.posterior_high:+.4f}]")
    if "treated_mean" in ok.columns and len(ok):
        k = min(10, len(ok))
        naive = set(ok.nlargest(k, "treated_mean")["item"])
        causal = set(ok.nsmallest(k, "rank")["item"])
        print(f"Of the top {k} by naive click rate, {len(naive & causal)} are in the causal "
              f"top {k}.")
    if truth is not None and len(ok):
        from scipy import stats

        merged = ok.merge(truth[["item", "true_ate"]], on="item")
        true = merged["true_ate"]
        covered = ((merged["ci_low"] <= true) & (true <= merged["ci_high"])).mean()
        rho = stats.spearmanr(merged["posterior_mean"], true).statistic
        print(f"Against the simulation's known effects: raw 95% intervals cover {covered:.0%} of "
              f"them; rank correlation of the shrunk estimates with the truth {rho:.2f}.")


# ----------------------------------------------------------------- commands
def _cmd_effects(args, progress) -> int:
    out = Path(args.out)
    _check_table_path(out)  # before minutes of fitting
    if args.spark is not None:
        from .spark.cli import spark_effects
        _estimator(args)  # a bad flag fails now, before Spark starts
        effects = spark_effects(args, _roles(args), _options(args), progress)
    else:
        log, _, _ = _read(args, progress)
        estimator = _estimator(args)
        effects = _fit(estimator, log, progress).effects_
    _write_table(effects, out)
    counts = ", ".join(f"{k} {v}" for k, v in effects["status"].value_counts().items())
    print(f"Wrote effects of {len(effects)} items to {out} ({counts})")
    return 0


def _cmd_report(args, progress) -> int:
    if args.spark is not None:
        from .spark.cli import spark_log
        _estimator(args)  # a bad flag fails now, before Spark starts
        roles = _roles(args)
        with spark_log(args, progress) as sdf:
            from .estimate import estimate_item_effects
            with progress.step("estimating effects on Spark"):
                effects = estimate_item_effects(sdf, **roles, **_options(args))
            report = _report(effects, roles, None, args, progress, args.title, args.top,
                             refute=args.refute, data=sdf)
    else:
        log, roles, graph = _read(args, progress)
        estimator = _estimator(args)
        _fit(estimator, log, progress)
        report = _report(estimator, roles, graph, args, progress, args.title, args.top,
                         refute=args.refute)
    with progress.step("ranking items and writing the report"):
        path = report.save(args.out)
    _print_summary(report.table(), path)
    return 0


def _cmd_audit(args, progress) -> int:
    try:
        from .fairness import FairnessAudit
    except ImportError as exc:
        raise RuntimeError(f"the fairness audit is not available: {exc}") from None
    estimator = _estimator(args)  # a bad flag fails now, before reading or Spark
    if args.spark is not None:
        from .spark.cli import spark_log
        roles = _roles(args)
        with spark_log(args, progress) as sdf, \
                progress.step("auditing effects across groups on Spark"):
            audit = FairnessAudit(**roles, group=args.group, provider=args.provider,
                                  estimator=estimator).fit(sdf)
    else:
        log, roles, _ = _read(args, progress)
        with progress.step("auditing effects across groups"):
            audit = FairnessAudit(**roles, group=args.group, provider=args.provider,
                                  estimator=estimator).fit(log.data)
    from .schema import csv_safe

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_safe(audit.group_effects_).to_csv(out / "group_effects.csv", index=False)
    csv_safe(audit.disparity_).to_csv(out / "disparity.csv", index=False)
    audit.report(out / "audit.html")
    print(f"Audit: {(out / 'audit.html').resolve()}")
    print(f"Tables: {out / 'group_effects.csv'}, {out / 'disparity.csv'}")
    return 0


def _cmd_simulate(args, progress) -> int:
    from .datasets import simulate_log

    with progress.step(f"simulating {args.rows:,} rows over {args.items:,} items"):
        sim = simulate_log(n_items=args.items, n_users=args.users, n_rows=args.rows,
                           outcome=args.outcome, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / f"log.{args.format}"
    _write_table(sim.data, log_path)
    sim.truth.to_csv(out / "truth.csv", index=False)
    sim.group_truth.to_csv(out / "group_truth.csv", index=False)
    (out / "roles.json").write_text(json.dumps(sim.roles, indent=2) + "\n")
    r = sim.roles
    print(f"Wrote {log_path}, truth.csv, group_truth.csv and roles.json to {out}")
    print(f"Try: {PROG} report {log_path} --item {r['item']} --treatment {r['treatment']} "
          f"--outcome {r['outcome']} --confounders {','.join(r['confounders'])} "
          f"--categorical {','.join(r['categorical'])} --text {','.join(r['text'])} "
          f"--out {out / 'report'}")
    return 0


def _cmd_demo(args, progress) -> int:
    from .datasets import load_sample
    from .schema import InteractionLog

    estimator = _estimator(args)
    with progress.step("loading the bundled sample"):
        sample = load_sample()
    roles = dict(sample.roles, propensity=None)
    if args.no_text:
        roles["text"] = []
    else:
        progress.say("the profile text 'user_text' is a confounder: embedding it offline "
                     "with a small BERT model (cached after the first run)")
    log = InteractionLog(sample.data, **roles)
    progress.say(f"{len(sample.data):,} rows, {sample.data[roles['item']].nunique()} items")
    _fit(estimator, log, progress)
    report = _report(estimator, roles, None, args, progress,
                     "Demo: causal effects of recommendations on the bundled sample",
                     refute=args.refute)
    with progress.step("ranking items and writing the report"):
        path = report.save(args.out)
    _print_summary(report.table(), path, truth=sample.truth)
    return 0


# ----------------------------------------------------------------- entry point
def main(argv=None) -> int:
    """Run the command line; returns the exit status (0 on success)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help / --version exit 0; usage errors were printed
        return int(exc.code or 0)
    progress = _Progress(getattr(args, "quiet", False))
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.func(args, progress)
    except (ValueError, OSError, RuntimeError, TypeError) as exc:
        # SchemaError and GraphError are ValueErrors (UnicodeError too), FileNotFoundError an
        # OSError, a bad torch device a RuntimeError, a wrongly typed column a TypeError.
        # CAUSALREC_DEBUG=1 shows the traceback instead.
        if os.environ.get("CAUSALREC_DEBUG"):
            raise
        _fail(exc)
        return RUNTIME_ERROR
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
