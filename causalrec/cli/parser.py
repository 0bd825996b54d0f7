"""The command line's parser: commands, flags and their checks."""
from __future__ import annotations

import argparse

from .commands import cmd_audit, cmd_demo, cmd_effects, cmd_report, cmd_simulate
from .net_command import cmd_net
from .output import PROG, USAGE_ERROR, fail

__all__ = ["build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage block) and exits with 2."""

    def error(self, message):
        fail(f"{message} (see '{self.prog} --help')")
        raise SystemExit(USAGE_ERROR)


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
    from .. import __version__
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    effects = commands.add_parser("effects", help="estimate every item's effect to a table")
    _add_log_flags(effects)
    effects.add_argument("--out", required=True, help="output table, .csv or .parquet")
    _add_spark_flag(effects)
    effects.set_defaults(func=cmd_effects)

    report = commands.add_parser("report", help="effects, ranking and a self-contained HTML report")
    _add_log_flags(report)
    report.add_argument("--out", required=True, help="output folder")
    report.add_argument("--refute", action="store_true",
                        help="also run refutation checks (placebo, random cause, subsets)")
    report.add_argument("--title", default="Causal effects of recommendations")
    report.add_argument("--top", type=_positive_int, default=10, help="items shown per end")
    _add_spark_flag(report)
    report.set_defaults(func=cmd_report)

    audit = commands.add_parser("audit", help="fairness audit of effects across user groups")
    _add_log_flags(audit)
    audit.add_argument("--group", required=True, help="sensitive user-group column")
    audit.add_argument("--provider", help="item-provider column")
    audit.add_argument("--out", required=True, help="output folder")
    _add_spark_flag(audit)
    audit.set_defaults(func=cmd_audit)

    net = commands.add_parser("net", help="own and net effects: does an item add to the "
                              "unit's total, or take from its other items?")
    _add_log_flags(net)
    net.add_argument("--unit", required=True, help="user or session column sharing a total")
    net.add_argument("--category", help="item category column: pairs grouped by category")
    net.add_argument("--out", required=True, help="output folder")
    net.add_argument("--title", default="Own and net effects of recommendations")
    net.add_argument("--top", type=_positive_int, default=10, help="items shown per table")
    net.set_defaults(func=cmd_net)

    simulate = commands.add_parser("simulate", help="write a simulated log with known effects")
    simulate.add_argument("--out", required=True, help="output folder")
    simulate.add_argument("--items", type=_positive_int, default=200)
    simulate.add_argument("--rows", type=_positive_int, default=40_000)
    simulate.add_argument("--users", type=_positive_int, default=2000)
    simulate.add_argument("--outcome", choices=("binary", "continuous"), default="binary")
    simulate.add_argument("--format", choices=("csv", "parquet"), default="csv")
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    simulate.set_defaults(func=cmd_simulate)

    demo = commands.add_parser("demo", help="report on the bundled sample log")
    demo.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    demo.add_argument("--refute", action="store_true", help="also run refutation checks")
    demo.add_argument("--no-text", action="store_true",
                      help="skip the user-profile text confounder (faster, but biased)")
    _add_estimation_flags(demo)
    demo.set_defaults(func=cmd_demo)
    return parser
