"""The command line's parser: commands, flags and their checks."""
from __future__ import annotations

import argparse
import re

from ..estimate.params import MAX_FOLDS, MAX_REPEATS, string_choices
from ..schema import MISSING_POLICIES
from ..utils.suggest import did_you_mean
from .commands import cmd_audit, cmd_demo, cmd_effects, cmd_report, cmd_simulate
from .net_command import cmd_net
from .output import INTERRUPTED, MISSING_EXTRA, OK, PROG, RUNTIME_ERROR, USAGE_ERROR, fail

__all__ = ["build_parser"]


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Examples and exit codes as written; a flag's default (when it has one) in its help."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if any(default is v for v in (None, False, argparse.SUPPRESS)) or default == [] \
                or "default" in text:
            return text
        return text + " (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage block) and exits with 2, and a
    misspelt option, command or choice gets a "did you mean"."""

    def error(self, message):
        if message.startswith("unrecognized arguments: "):
            options = [token.split("=")[0] for token in message.split(": ", 1)[1].split()
                       if token.startswith("-")]
            message += "".join(did_you_mean(option, self._option_strings(), n=1) for option in options)
        fail(f"{message} (see '{self.prog} --help')")
        raise SystemExit(USAGE_ERROR)

    def _check_value(self, action, value):
        if action.choices is not None and value not in action.choices:
            shown = ", ".join(map(str, action.choices))
            raise argparse.ArgumentError(action, f"invalid choice: {value!r} (choose from "
                                                 f"{shown}){did_you_mean(value, action.choices)}")

    def _option_strings(self) -> list[str]:
        """Every flag of this parser and of its commands (the top-level parser reports
        a command's unknown flags)."""
        found = []
        for action in self._actions:
            found += action.option_strings
            if isinstance(action, argparse._SubParsersAction):
                for parser in action.choices.values():
                    found += parser._option_strings()
        return sorted(set(found))


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

# the exit statuses main() returns (cli/output.py); also in the README's "Command line"
EXIT_CODES = f"""exit codes:
  {OK}    success
  {RUNTIME_ERROR}    unexpected error: the run failed (CAUSALREC_DEBUG=1 shows the traceback)
  {USAGE_ERROR}    usage or bad input: a wrong flag or value, a missing file or column, a bad log
  {MISSING_EXTRA}    the feature needs an optional extra that is not installed (the message names it)
  {INTERRUPTED}  interrupted (Ctrl-C)
"""


def _repeats(value: str):
    """--repeats: "auto" or a positive integer (the estimator's ``n_repeats``)."""
    return value if value == "auto" else _positive_int(value)


def _device(value: str) -> str:
    """--device: one of the estimator's named devices, or cuda:N."""
    if value in string_choices("device") or re.fullmatch(r"cuda:\d+", value):
        return value
    raise argparse.ArgumentTypeError(
        f"invalid choice: {value!r} (choose from {', '.join(string_choices('device'))}, "
        f"cuda:N){did_you_mean(value, string_choices('device'))}")


def _add_estimation_flags(parser: argparse.ArgumentParser) -> None:
    # the allowed values are the estimator's declared constraints (estimate/params.py)
    parser.add_argument("--method", default="aipw", choices=string_choices("method"),
                        help="estimator: doubly robust AIPW, Hajek IPW or outcome regression")
    parser.add_argument("--nuisance", default="pooled", choices=string_choices("nuisance"),
                        help="propensity and outcome models: one pooled GLM with shrunk item "
                             "slopes, a GLM per item, XGBoost on top of the GLM (boost extra), "
                             "low-rank item factors, or the out-of-fold best of them")
    parser.add_argument("--estimand", default="population", choices=string_choices("estimand"),
                        help="intervals for the average effect over users drawn like the "
                             "logged ones, or over the logged users as they are (narrower "
                             "where effects vary over users)")
    parser.add_argument("--folds", type=_positive_int, default=2,
                        help=f"cross-fitting folds (1 to {MAX_FOLDS})")
    parser.add_argument("--repeats", type=_repeats, default="auto", metavar="{auto,N}",
                        help="cross-fitting splits whose estimates are combined (auto: as "
                             f"many as the log affords, up to 16; 1 to {MAX_REPEATS}): more "
                             "splits, less dependence on --seed")
    parser.add_argument("--device", type=_device, default="auto",
                        metavar="{" + ",".join(string_choices("device")) + ",cuda:N}",
                        help="where the models are fitted (auto: CUDA when present)")
    parser.add_argument("--dtype", default="float32", choices=string_choices("dtype"),
                        help="float64 is slower and more exact")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the cross-fitting folds and of the checks")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress lines on stderr (errors are still shown)")


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
    parser.add_argument("--unit", help="user or session column: all of a unit's rows share one "
                                       "cross-fitting fold (a user seen under many items never "
                                       "sits on both sides of a split)")
    parser.add_argument("--missing", default="error", choices=MISSING_POLICIES,
                        help="missing values in numeric confounders: bad input, or filled "
                             "(median) and adjusted for with a 0/1 indicator column each")
    parser.add_argument("--encoding", default="utf-8",
                        help="text encoding of a CSV log (e.g. latin-1, cp1252)")
    parser.add_argument("--graph", help="causal graph (.gml, see CausalGraph.to_gml); its "
                                        "adjustment set is added to the confounders")
    _add_estimation_flags(parser)


def _add_spark_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spark", nargs="?", const="local[*]", metavar="MASTER",
                        help="read the Parquet log (a file or folder) with Spark and run "
                             "there: a master URL (default local[*]) or sc://host:port for "
                             "Spark Connect; needs the spark extra")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, formatter_class=_Formatter,
                     description="What does recommending an item actually cause? "
                     "Per-item causal effects from logged recommendations.",
                     epilog=_EXAMPLES + "\n" + EXIT_CODES)
    from .. import __version__
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}",
                        help="show the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser,
                                     help="what to do (causalrec COMMAND --help for its flags)")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        stop = "" if summary.endswith("?") else "."
        return commands.add_parser(name, help=summary, description=summary[0].upper()
                                   + summary[1:] + stop, epilog=EXIT_CODES,
                                   formatter_class=_Formatter)

    commands.required = True

    effects = command("effects", "estimate every item's effect to a table")
    _add_log_flags(effects)
    effects.add_argument("--out", required=True, help="output table, .csv or .parquet")
    _add_spark_flag(effects)
    effects.set_defaults(func=cmd_effects)

    report = command("report", "effects, ranking and a self-contained HTML report")
    _add_log_flags(report)
    report.add_argument("--out", required=True, help="output folder")
    report.add_argument("--refute", action="store_true",
                        help="also run refutation checks (placebo, random cause, subsets)")
    report.add_argument("--title", default="Causal effects of recommendations",
                        help="the report's title")
    report.add_argument("--top", type=_positive_int, default=10, help="items shown per end")
    _add_spark_flag(report)
    report.set_defaults(func=cmd_report)

    audit = command("audit", "fairness audit of effects across user groups")
    _add_log_flags(audit)
    audit.add_argument("--group", required=True, help="sensitive user-group column")
    audit.add_argument("--provider", help="item-provider column")
    audit.add_argument("--out", required=True, help="output folder")
    _add_spark_flag(audit)
    audit.set_defaults(func=cmd_audit)

    net = command("net", "own and net effects: does an item add to the unit's total, or "
                  "take from its other items?")
    _add_log_flags(net)
    unit = next(a for a in net._actions if a.dest == "unit")  # from the log flags, but here
    unit.required, unit.help = True, "user or session column: its rows' outcomes sum to a total"
    net.add_argument("--category", help="item category column: pairs grouped by category")
    net.add_argument("--out", required=True, help="output folder")
    net.add_argument("--title", default="Own and net effects of recommendations",
                     help="title of the report")
    net.add_argument("--top", type=_positive_int, default=10,
                     help="items shown per table, and the items whose pairs are tested")
    net.set_defaults(func=cmd_net)

    simulate = command("simulate", "write a simulated log with known effects")
    simulate.add_argument("--out", required=True, help="output folder")
    simulate.add_argument("--items", type=_positive_int, default=200, help="number of items")
    simulate.add_argument("--rows", type=_positive_int, default=40_000,
                          help="number of rows (user-item opportunities)")
    simulate.add_argument("--users", type=_positive_int, default=2000, help="number of users")
    simulate.add_argument("--outcome", choices=("binary", "continuous"), default="binary",
                          help="a 0/1 click or continuous watch minutes")
    simulate.add_argument("--format", choices=("csv", "parquet"), default="csv",
                          help="file format of the log")
    simulate.add_argument("--seed", type=int, default=0, help="seed of the simulation")
    simulate.add_argument("-q", "--quiet", action="store_true",
                          help="no progress lines on stderr (errors are still shown)")
    simulate.set_defaults(func=cmd_simulate)

    demo = command("demo", "report on the bundled sample log")
    demo.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    demo.add_argument("--refute", action="store_true", help="also run refutation checks")
    demo.add_argument("--no-text", action="store_true",
                      help="skip the user-profile text confounder (faster, but biased)")
    _add_estimation_flags(demo)
    demo.set_defaults(func=cmd_demo)
    return parser
