"""The causalrec command line: round trips on CSV and Parquet, the console script, errors."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from causalrec.cli import main
from causalrec.datasets import simulate_log
from causalrec.estimate import estimate_item_effects
from causalrec.identify import CausalGraph

SIM = dict(n_items=12, n_users=200, n_rows=2000, seed=3)
ROLES = dict(item="item_id", treatment="recommended", outcome="clicked",
             confounders=["user_activity", "hour", "tenure"], categorical=["device", "user_group"])
FLAGS = ["--item", "item_id", "--treatment", "recommended", "--outcome", "clicked",
         "--confounders", "user_activity,hour,tenure", "--categorical", "device,user_group"]


def console_script() -> str:
    """The installed ``causalrec`` entry point of this environment."""
    path = Path(sys.executable).parent / "causalrec"
    return str(path) if path.exists() else shutil.which("causalrec")


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """The same simulated log written by ``causalrec simulate`` as CSV and as Parquet."""
    root = tmp_path_factory.mktemp("sim")
    for fmt in ("csv", "parquet"):
        argv = ["simulate", "--out", str(root / fmt), "--items", str(SIM["n_items"]),
                "--users", str(SIM["n_users"]), "--rows", str(SIM["n_rows"]),
                "--seed", str(SIM["seed"]), "--format", fmt, "-q"]
        assert main(argv) == 0
    return {"csv": root / "csv" / "log.csv", "parquet": root / "parquet" / "log.parquet"}


def one_error_line(stderr: str) -> str:
    """The error line: the last line, the only one that is not a progress line."""
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("causalrec: error: ")]
    assert errors == lines[-1:], stderr
    assert all(line.startswith("causalrec: ") for line in lines) and "Traceback" not in stderr
    return errors[0]


def test_simulate_writes_log_truth_and_roles(logs):
    sim = simulate_log(**SIM)
    folder = logs["csv"].parent
    assert json.loads((folder / "roles.json").read_text()) == sim.roles
    truth = pd.read_csv(folder / "truth.csv")
    np.testing.assert_allclose(truth["true_ate"], sim.truth["true_ate"], rtol=1e-12)
    for path in logs.values():
        data = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
        assert data.shape == sim.data.shape
        np.testing.assert_array_equal(data["clicked"], sim.data["clicked"])


@pytest.mark.parametrize("fmt,out_name", [("csv", "effects.csv"), ("parquet", "effects.parquet")])
def test_effects_round_trip_matches_the_library(logs, tmp_path, capsys, fmt, out_name):
    out = tmp_path / out_name
    assert main(["effects", str(logs[fmt]), *FLAGS, "--seed", "0", "-q", "--out", str(out)]) == 0
    assert "Wrote effects of 12 items" in capsys.readouterr().out
    got = pd.read_csv(out) if out.suffix == ".csv" else pd.read_parquet(out)
    expected = estimate_item_effects(simulate_log(**SIM).data, **ROLES, seed=0)
    assert list(got.columns) == list(expected.columns)
    assert list(got["status"]) == list(expected["status"])
    # a CSV log re-parses floats to within an ulp; estimates follow to far below their SEs
    np.testing.assert_allclose(got["ate"], expected["ate"], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(got["se"], expected["se"], rtol=1e-7, atol=1e-9)


def test_graph_file_supplies_the_confounders(logs, tmp_path):
    graph = CausalGraph.recommendation("recommended", "clicked",
                                       user=["user_activity", "tenure", "user_group"],
                                       context=["hour", "device"])
    graph.to_gml(tmp_path / "graph.gml")
    out = tmp_path / "from_graph.csv"
    argv = ["effects", str(logs["parquet"]), "--item", "item_id", "--treatment", "recommended",
            "--outcome", "clicked", "--graph", str(tmp_path / "graph.gml"), "-q", "--out", str(out)]
    assert main(argv) == 0
    expected = estimate_item_effects(pd.read_parquet(logs["parquet"]), item="item_id",
                                     treatment="recommended", outcome="clicked", graph=graph)
    np.testing.assert_allclose(pd.read_csv(out)["ate"], expected["ate"], rtol=1e-7, atol=1e-9)


def test_report_through_the_console_script(logs, tmp_path):
    out = tmp_path / "report"
    result = subprocess.run([console_script(), "report", str(logs["parquet"]), *FLAGS,
                             "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"Report: {(out / 'report.html').resolve()}" in result.stdout
    assert "causalrec: estimating effects ..." in result.stderr  # progress on stderr
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and 'id="ranking"' in page
    table = pd.read_csv(out / "effects.csv")
    assert len(table) == SIM["n_items"]
    assert {"rank", "posterior_mean", "prob_positive", "q_value", "rv"} <= set(table.columns)
    assert (out / "effects.parquet").exists() and (out / "policies.csv").exists()


def test_console_script_error_is_one_line(tmp_path):
    result = subprocess.run([console_script(), "effects", str(tmp_path / "missing.csv"), *FLAGS,
                             "--out", str(tmp_path / "e.csv")], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2 and result.stdout == ""
    assert one_error_line(result.stderr) == (
        f"causalrec: error: no such log file: {tmp_path / 'missing.csv'}")
    module = subprocess.run([sys.executable, "-m", "causalrec.cli", "--version"],
                            capture_output=True, text=True, timeout=300)
    assert module.returncode == 0 and module.stdout.startswith("causalrec ")


def test_python_m_causalrec_is_the_command_line(tmp_path):
    # was: "No module named causalrec.__main__; 'causalrec' is a package ..."
    result = subprocess.run([sys.executable, "-m", "causalrec", "effects",
                             str(tmp_path / "missing.csv"), *FLAGS, "--out", str(tmp_path / "e.csv")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and one_error_line(result.stderr) == (
        f"causalrec: error: no such log file: {tmp_path / 'missing.csv'}")


@pytest.mark.parametrize("change,code,message", [
    ({"log": "missing.csv"}, 2, "no such log file"),
    ({"log": "log.txt"}, 2, "expected a .csv or .parquet file"),
    ({"--item": "nope"}, 2, "column 'nope': missing from the log"),
    ({"--item": "itemid"}, 2, "missing from the log (role 'item'); did you mean 'item_id'"),
    ({"--treatment": "hour"}, 2, "column 'hour': treatment must be binary"),
    ({"--method": "magic"}, 2, "argument --method: invalid choice: 'magic' (choose from aipw, "),
    ({"--nuisance": "boosterd"}, 2, "invalid choice: 'boosterd' (choose from pooled, per_item"),
    ({"--out": "effects.txt"}, 2, "--out must end in .csv or .parquet"),
    ({"--graph": "missing.gml"}, 2, "no such graph file"),
    ({"--graph": "log.txt"}, 2, "cannot read the graph"),
    ({"--device": "gpu9"}, 2, "argument --device: invalid choice: 'gpu9'"),
    ({"--folds": "0"}, 2, "argument --folds: expected a positive integer, got '0'"),
    ({"--bogus": "1"}, 2, "unrecognized arguments: --bogus 1"),
    ({"--item": None}, 2, "the following arguments are required: --item"),
])
def test_bad_input_exits_non_zero_with_one_line(logs, tmp_path, capsys, change, code, message):
    (tmp_path / "log.txt").write_text("not a log")
    options = {"log": str(logs["csv"]), "--item": "item_id", "--treatment": "recommended",
               "--outcome": "clicked", "--out": str(tmp_path / "effects.csv")}
    for key, value in change.items():
        if value is None:
            del options[key]
        else:
            options[key] = str(tmp_path / value) if key in ("log", "--graph") else value
    argv = ["effects", options.pop("log")] + [x for kv in options.items() for x in kv]
    assert main(argv) == code
    captured = capsys.readouterr()
    assert message in one_error_line(captured.err) and captured.out == ""
    assert not (tmp_path / "effects.csv").exists()


def test_no_command_and_unknown_command_are_usage_errors(capsys):
    assert main([]) == 2
    assert "required: COMMAND" in one_error_line(capsys.readouterr().err)
    assert main(["explain"]) == 2
    assert "invalid choice: 'explain'" in one_error_line(capsys.readouterr().err)


def test_help_lists_the_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("effects", "report", "audit", "simulate", "demo"):
        assert command in out


def test_audit_writes_its_tables(logs, tmp_path, capsys):
    out = tmp_path / "audit"
    argv = ["audit", str(logs["csv"]), *FLAGS, "--group", "user_group",
            "--provider", "item_provider", "-q", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    group_effects = pd.read_csv(out / "group_effects.csv")
    n_groups = pd.read_csv(logs["csv"])["user_group"].nunique()
    assert len(group_effects) == SIM["n_items"] * n_groups
    assert {"item", "group", "ate", "se"} <= set(group_effects.columns)
    assert {"item", "disparity", "q_value"} <= set(pd.read_csv(out / "disparity.csv").columns)
    page = (out / "audit.html").read_text(encoding="utf-8")
    assert "<script" not in page and 'src="http' not in page


@pytest.mark.slow
def test_report_with_refutation(logs, tmp_path, capsys):
    out = tmp_path / "refuted"
    assert main(["report", str(logs["csv"]), *FLAGS, "--refute", "-q", "--out", str(out)]) == 0
    refutation = pd.read_csv(out / "refutation.csv")
    assert set(refutation["check"]) == {"placebo", "random_common_cause", "subset"}
    assert "<td>placebo</td>" in (out / "report.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_demo_reports_on_the_bundled_sample(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--no-text", "-q", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert f"Report: {(out / 'report.html').resolve()}" in stdout
    assert "Against the simulation's known effects" in stdout
    table = pd.read_csv(out / "effects.csv")
    assert table["rank"].notna().sum() >= 10


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda_is_one_line(logs, tmp_path, capsys):
    argv = ["effects", str(logs["csv"]), *FLAGS, "--device", "cuda", "--out", str(tmp_path / "e.csv")]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "--device cuda: no such CUDA device" in one_error_line(captured.err)


def test_encoding_flag_and_csv_outputs_cannot_run_formulas(logs, tmp_path, capsys):
    df = pd.read_csv(logs["csv"])
    names = {0: "=HYPERLINK(\"http://x\",\"y\")", 1: "+1+1", 2: "@SUM(A1)", 3: "-2+3", 4: "-5"}
    df["item_id"] = df["item_id"].map(lambda k: names.get(k, f"café {k}"))
    path = tmp_path / "latin.csv"
    df.to_csv(path, index=False, encoding="latin-1")
    out = tmp_path / "effects.csv"
    assert main(["effects", str(path), *FLAGS, "--out", str(out), "-q"]) == 2
    assert f"cannot read {path}: it is not utf-8 text" in one_error_line(capsys.readouterr().err)
    assert main(["effects", str(path), *FLAGS, "--encoding", "latin-1", "--out", str(out), "-q"]) == 0
    written = pd.read_csv(out)
    items = set(written["item_id"] if "item_id" in written else written["item"])
    assert {"'" + names[k] for k in range(4)} <= items  # escaped: text, not a formula
    assert "-5" in items or -5 in items  # a number written as text is left alone
    assert "café 7" in items
    assert (written["ate"].dropna() < 0).any()  # negative numbers are written as numbers


def test_boosted_nuisance_from_the_command_line(logs, tmp_path, capsys):
    out = tmp_path / "boosted.csv"
    assert main(["effects", str(logs["parquet"]), *FLAGS, "--nuisance", "boosted", "-q",
                 "--out", str(out)]) == 0
    got = pd.read_csv(out)
    expected = estimate_item_effects(simulate_log(**SIM).data, **ROLES, nuisance="boosted")
    np.testing.assert_allclose(got["ate"], expected["ate"], rtol=1e-6, atol=1e-9)
    assert main(["effects", str(logs["parquet"]), *FLAGS, "--nuisance", "magic", "-q",
                 "--out", str(out)]) == 2
    assert "nuisance" in capsys.readouterr().err


# ------------------------------------------------ the CLI as analysts know them (issue 27)
def _commands():
    from causalrec.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and "effects" in a.choices)
    return parser, sub.choices


def test_enumerated_flags_take_their_choices_from_the_estimator(capsys):
    from causalrec.estimate import ItemEffectEstimator
    from causalrec.utils.validation import Options

    declared = {name: tuple(v for c in rules if isinstance(c, Options) for v in c.values
                            if isinstance(v, str))
                for name, rules in ItemEffectEstimator._parameter_constraints.items()}
    _, commands = _commands()
    for name in ("effects", "report", "audit", "demo"):
        flags = {a.dest: a for a in commands[name]._actions}
        for flag in ("method", "nuisance", "dtype"):
            assert tuple(flags[flag].choices) == declared[flag] and len(declared[flag]) >= 2
        assert all(device in flags["device"].metavar for device in declared["device"])
    assert main(["report", "--help"]) == 0
    page = capsys.readouterr().out
    assert "{" + ",".join(declared["nuisance"]) + "}" in page and "{aipw,ipw,or}" in page
    assert "exit codes:" in page


def test_every_flag_has_help():
    parser, commands = _commands()
    for owner in [parser, *commands.values()]:
        for action in owner._actions:
            assert action.help and action.help.strip(), (owner.prog, action.option_strings)


def test_did_you_mean_for_misspelt_options_and_commands(logs, tmp_path, capsys):
    argv = ["effects", str(logs["csv"]), *FLAGS, "--out", str(tmp_path / "e.csv")]
    assert main(argv + ["--nuisence", "pooled"]) == 2
    assert "unrecognized arguments: --nuisence pooled; did you mean '--nuisance'?" in \
        one_error_line(capsys.readouterr().err)
    assert main(["reprot"]) == 2
    assert "did you mean 'report'?" in one_error_line(capsys.readouterr().err)
    assert main(argv + ["--method", "aipww"]) == 2
    assert "did you mean 'aipw'" in one_error_line(capsys.readouterr().err)


def test_plan_line_comes_before_the_work(logs, tmp_path, capsys):
    out = tmp_path / "e.csv"
    assert main(["effects", str(logs["csv"]), *FLAGS, "--out", str(out)]) == 0
    lines = capsys.readouterr().err.splitlines()
    plans = [i for i, line in enumerate(lines) if line.startswith("causalrec: plan: ")]
    assert len(plans) == 1, lines
    plan = lines[plans[0]]
    assert f"{SIM['n_rows']:,} rows from {logs['csv']}" in plan
    assert f"estimating {SIM['n_items']} items with method=aipw, nuisance=pooled, 2 folds" in plan
    assert plan.endswith(f"writing {out}")
    assert plans[0] < lines.index("causalrec: estimating effects ...")


def test_exit_codes_are_documented_and_returned(monkeypatch, capsys):
    from causalrec.cli import output, parser

    assert main(["--help"]) == 0
    page = capsys.readouterr().out
    for status in (output.OK, output.RUNTIME_ERROR, output.USAGE_ERROR, output.MISSING_EXTRA,
                   output.INTERRUPTED):
        assert f"\n  {status} " in page
    raised = {ImportError("nuisance='boosted' needs XGBoost: pip install "
                          "'causalrec-effects[boost]'"): output.MISSING_EXTRA,
              KeyError("x"): output.RUNTIME_ERROR, RuntimeError("the fit failed"): output.RUNTIME_ERROR,
              FileNotFoundError("no such log file: x"): output.USAGE_ERROR}
    for error, status in raised.items():
        def broken(args, progress, error=error):
            raise error
        monkeypatch.setattr(parser, "cmd_simulate", broken)
        assert main(["simulate", "--out", "unused", "-q"]) == status
        line = one_error_line(capsys.readouterr().err)
        assert str(error).strip("'") in line
        assert ("unexpected KeyError" in line) == isinstance(error, KeyError)


# ------------------------------------------------ missing values in numeric confounders
def test_missing_flag_passes_the_policy_to_every_command(tmp_path, capsys):
    """``--missing indicator`` on a CSV log with empty tenure cells: ``effects`` writes the
    Python API's table and ``audit`` the audit's; the choices are the schema's declared
    tuple; without the flag the one error line names the flag."""
    from causalrec.fairness import FairnessAudit
    from causalrec.schema import MISSING_POLICIES

    data = simulate_log(**SIM).data
    data["tenure"] = data["tenure"].mask(np.arange(len(data)) % 7 == 0)
    path = tmp_path / "log.csv"
    data.to_csv(path, index=False)
    df = pd.read_csv(path)
    assert df["tenure"].isna().sum() == len(data[::7])
    _, commands = _commands()
    for name in ("effects", "report", "audit", "net"):
        flags = {a.dest: a for a in commands[name]._actions}
        assert tuple(flags["missing"].choices) == MISSING_POLICIES and \
            flags["missing"].default == "error"

    out = tmp_path / "effects.csv"
    argv = ["effects", str(path), *FLAGS, "--seed", "0", "-q", "--out", str(out)]
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "column 'tenure'" in line and "--missing indicator" in line and not out.exists()
    assert main(argv + ["--missing", "indicator"]) == 0, capsys.readouterr().err
    got = pd.read_csv(out)
    expected = estimate_item_effects(df, **ROLES, seed=0, missing="indicator")
    assert list(got["status"]) == list(expected["status"]) and (got["status"] == "ok").any()
    for col in ("ate", "se", "ci_low", "ci_high"):
        np.testing.assert_allclose(got[col], expected[col], rtol=1e-7, atol=1e-9)

    audit_out = tmp_path / "audit"
    assert main(["audit", str(path), *FLAGS, "--group", "user_group", "--missing", "indicator",
                 "-q", "--out", str(audit_out)]) == 0, capsys.readouterr().err
    audit = FairnessAudit(**ROLES, group="user_group", missing="indicator").fit(df)
    written = pd.read_csv(audit_out / "group_effects.csv")
    np.testing.assert_allclose(written["ate"], audit.group_effects_["ate"], rtol=1e-7, atol=1e-9)


def test_repeats_flag_is_the_estimators_n_repeats(tmp_path, capsys):
    """``--repeats N`` writes the Python API's table for ``n_repeats=N`` (and differs from
    the default's); ``auto`` is the default; 0 or a word is a one-line usage error."""
    data = simulate_log(**SIM).data
    path = tmp_path / "log.csv"
    data.to_csv(path, index=False)
    df = pd.read_csv(path)
    _, commands = _commands()
    for name in ("effects", "report", "audit", "net"):
        assert {a.dest: a for a in commands[name]._actions}["repeats"].default == "auto"
    out = tmp_path / "effects.csv"
    assert main(["effects", str(path), *FLAGS, "-q", "--repeats", "1", "--out", str(out)]) == 0
    got = pd.read_csv(out)
    one = estimate_item_effects(df, **ROLES, n_repeats=1)
    default = estimate_item_effects(df, **ROLES)
    ok = (one["status"] == "ok").to_numpy()
    assert ok.any() and list(got["status"]) == list(one["status"])
    np.testing.assert_allclose(got["ate"], one["ate"], rtol=1e-7, atol=1e-9)
    assert not np.allclose(got["ate"][ok], default["ate"][ok])
    for bad in ("0", "many"):
        assert main(["effects", str(path), *FLAGS, "-q", "--repeats", bad, "--out",
                     str(out)]) == 2
        assert "--repeats" in capsys.readouterr().err
