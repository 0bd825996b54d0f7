"""The commands (effects, report, audit, simulate, demo) and the steps they share. Heavy
modules (torch, matplotlib, pyspark) are imported inside the commands that need them."""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from .output import PROG

__all__ = ["cmd_effects", "cmd_report", "cmd_audit", "cmd_simulate", "cmd_demo"]


def _estimator(args):
    from ..estimate import ItemEffectEstimator

    _check_device(args.device)
    estimator = ItemEffectEstimator(method=args.method, nuisance=args.nuisance,
                                    n_folds=args.folds, device=args.device, seed=args.seed,
                                    dtype=args.dtype, estimand=args.estimand,
                                    n_repeats=args.repeats)
    estimator._validate_params()  # fail on a bad flag now, not after minutes of fitting
    return estimator


def _options(args) -> dict:
    return dict(method=args.method, nuisance=args.nuisance, n_folds=args.folds,
                device=args.device, seed=args.seed, dtype=args.dtype, estimand=args.estimand,
                n_repeats=args.repeats)


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
    """The log's roles and its missing-value policy (--missing), as every command passes them
    on: to ``InteractionLog``, the estimator's functions, the refutation and the audit."""
    return dict(item=args.item, treatment=args.treatment, outcome=args.outcome,
                confounders=list(args.confounders), categorical=list(args.categorical),
                text=list(args.text), propensity=args.propensity, missing=args.missing)


def _graph(args):
    """The causal graph of ``--graph`` (None without the flag)."""
    if not getattr(args, "graph", None):
        return None
    import networkx as nx

    from ..identify import CausalGraph, GraphError

    if not Path(args.graph).exists():
        raise FileNotFoundError(f"no such graph file: {args.graph}")
    try:
        return CausalGraph.from_gml(args.graph, treatment=args.treatment, outcome=args.outcome)
    except nx.NetworkXError as exc:  # a malformed GML file
        raise GraphError(f"cannot read the graph {args.graph}: {exc}") from None


def _with_graph(roles: dict, graph, frame) -> dict:
    """The roles with the graph's adjustment columns added (``frame``: the log, or an empty
    frame with a Spark log's columns and types)."""
    if graph is None:
        return roles
    return {**roles, **graph.merge_adjustment(frame, roles["confounders"], roles["categorical"],
                                              roles["text"])}


def _read(args, progress, writes: str, work: str = "estimating {items} items"):
    """The log and its column roles (graph adjustment columns included), validated; then
    the one-line plan of the run (what it estimates, how, and what it writes)."""
    from ..schema import InteractionLog, read_log

    graph = _graph(args)
    with progress.step(f"reading {args.log}"):
        ids = [args.item, *args.categorical, getattr(args, "unit", None),
               getattr(args, "group", None), getattr(args, "provider", None),
               getattr(args, "category", None)]
        df = read_log(args.log, encoding=args.encoding, ids=[c for c in ids if c])
    roles = _with_graph(_roles(args), graph, df)
    # the unit groups the folds of the fit; the audit and refutations take the roles only
    log = InteractionLog(df, **roles, unit=getattr(args, "unit", None))
    _plan(args, progress, f"{len(df):,} rows from {args.log}",
          work.replace("{items}", f"{df[args.item].nunique():,}"), writes)
    return log, roles, graph


def _plan(args, progress, source: str, work: str, writes: str) -> None:
    """One line before the long work: "plan: N rows from LOG, estimating K items with
    method=..., nuisance=..., ...; writing OUT"."""
    from ..estimate import resolve_device

    refute = ", then refutation checks" if getattr(args, "refute", False) else ""
    progress.say(f"plan: {source}, {work} with method={args.method}, "
                 f"nuisance={args.nuisance}, {args.folds} folds on "
                 f"{resolve_device(args.device)} ({args.dtype}){refute}; writing {writes}")


def _spark_roles(args, sdf):
    """The roles of a Spark log (graph adjustment columns included, read from its schema) and
    the graph."""
    from ..spark.stage0 import schema_frame

    graph = _graph(args)
    return _with_graph(_roles(args), graph, schema_frame(sdf) if graph else None), graph


@contextmanager
def _effects_on_spark(args, progress):
    """(Spark log, roles, graph, effects table estimated on Spark), inside the Spark session;
    bad flags and a bad graph file fail before Spark starts."""
    from ..estimate import estimate_item_effects
    from ..spark.cli import spark_log

    _estimator(args)
    _graph(args)
    with spark_log(args, progress) as sdf:
        roles, graph = _spark_roles(args, sdf)
        _plan(args, progress, f"the rows of {args.log} on Spark ({args.spark})",
              "estimating every item", _writes(args))
        with progress.step("estimating effects on Spark"):
            effects = estimate_item_effects(sdf, **roles, unit=getattr(args, "unit", None),
                                            **_options(args))
        yield sdf, roles, graph, effects


def _writes(args) -> str:
    """What the command writes, for the plan line."""
    out = Path(args.out)
    if args.command == "effects":
        return str(out)
    if args.command == "audit":
        return f"{out / 'audit.html'}, {out / 'group_effects.csv'} and {out / 'disparity.csv'}"
    if args.command == "net":
        return f"{out / 'report.html'}, net_effects.csv, spillover_pairs.csv and its tables"
    return f"{out / 'report.html'} and its tables"


def _fit(estimator, log, progress):
    with progress.step("estimating effects"):
        return estimator.fit(log)


def _recommendation_graph(roles: dict):
    """The standard exposure graph over the adjustment columns (user_* columns as users)."""
    from ..identify import CausalGraph

    features = roles["confounders"] + roles["categorical"]
    return CausalGraph.recommendation(
        roles["treatment"], roles["outcome"], text=roles["text"],
        user=[c for c in features if str(c).startswith("user")],
        context=[c for c in features if not str(c).startswith("user")])


def _report(estimator, roles, graph, args, progress, title, top=10, refute=False, data=None):
    """Sensitivity and optional refutation; the report ranks the items itself. ``estimator``
    is fitted, or an effects table (the Spark path) with its log ``data``."""
    from ..refute import refute_item_effects, sensitivity
    from ..reporting import EffectReport

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
    from ..utils.io import TABLE_SUFFIXES

    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise ValueError(f"--out must end in .csv or .parquet, got {path.name!r}")


def _table_file(frame, path: Path) -> bytes:
    """The table as the bytes of a .csv or .parquet file (by ``path``'s suffix)."""
    from ..utils.io import TABLE_SUFFIXES, table_bytes

    _check_table_path(path)
    return table_bytes(frame, TABLE_SUFFIXES[path.suffix.lower()])


def _write_table(frame, path: Path) -> None:
    from ..utils.io import write_bytes

    write_bytes(path, _table_file(frame, path))  # atomic: never a partial table


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
def cmd_effects(args, progress) -> int:
    out = Path(args.out)
    _check_table_path(out)  # before minutes of fitting
    if args.spark is not None:
        with _effects_on_spark(args, progress) as (_, _, _, effects):
            pass
    else:
        estimator = _estimator(args)
        log, _, _ = _read(args, progress, _writes(args))
        effects = _fit(estimator, log, progress).effects_
    _write_table(effects, out)
    counts = ", ".join(f"{k} {v}" for k, v in effects["status"].value_counts().items())
    print(f"Wrote effects of {len(effects)} items to {out} ({counts})")
    return 0


def cmd_report(args, progress) -> int:
    if args.spark is not None:
        with _effects_on_spark(args, progress) as (sdf, roles, graph, effects):
            report = _report(effects, roles, graph, args, progress, args.title, args.top,
                             refute=args.refute, data=sdf)
    else:
        estimator = _estimator(args)
        log, roles, graph = _read(args, progress, _writes(args))
        _fit(estimator, log, progress)
        report = _report(estimator, roles, graph, args, progress, args.title, args.top,
                         refute=args.refute)
    with progress.step("ranking items and writing the report"):
        path = report.save(args.out)
    _print_summary(report.table(), path)
    return 0


def cmd_audit(args, progress) -> int:
    from ..fairness import FairnessAudit

    estimator = _estimator(args)  # a bad flag fails now, before reading or Spark
    if args.spark is not None:
        from ..spark.cli import spark_log
        _graph(args)  # a bad graph file fails before Spark starts
        with spark_log(args, progress) as sdf:
            roles, _ = _spark_roles(args, sdf)
            _plan(args, progress, f"the rows of {args.log} on Spark ({args.spark})",
                  f"auditing every item across the groups of {args.group}", _writes(args))
            with progress.step("auditing effects across groups on Spark"):
                audit = FairnessAudit(**roles, group=args.group, provider=args.provider,
                                      estimator=estimator).fit(sdf)
    else:
        log, roles, _ = _read(args, progress, _writes(args),
                              work="auditing {items} items across the groups of " + args.group)
        with progress.step("auditing effects across groups"):
            audit = FairnessAudit(**roles, group=args.group, provider=args.provider,
                                  estimator=estimator).fit(log.data)
    from ..utils.io import table_bytes, write_files

    out = Path(args.out)
    write_files(out, {"group_effects.csv": table_bytes(audit.group_effects_, "csv"),
                      "disparity.csv": table_bytes(audit.disparity_, "csv"),
                      "audit.html": audit.to_html()})
    print(f"Audit: {(out / 'audit.html').resolve()}")
    print(f"Tables: {out / 'group_effects.csv'}, {out / 'disparity.csv'}")
    return 0


def cmd_simulate(args, progress) -> int:
    from ..datasets import simulate_log

    with progress.step(f"simulating {args.rows:,} rows over {args.items:,} items"):
        sim = simulate_log(n_items=args.items, n_users=args.users, n_rows=args.rows,
                           outcome=args.outcome, seed=args.seed)
    from ..utils.io import table_bytes, write_files

    out = Path(args.out)
    log_path = out / f"log.{args.format}"
    write_files(out, {log_path.name: _table_file(sim.data, log_path),
                      "truth.csv": table_bytes(sim.truth, "csv"),
                      "group_truth.csv": table_bytes(sim.group_truth, "csv"),
                      "roles.json": json.dumps(sim.roles, indent=2) + "\n"})
    r = sim.roles
    print(f"Wrote {log_path}, truth.csv, group_truth.csv and roles.json to {out}")
    print(f"Try: {PROG} report {log_path} --item {r['item']} --treatment {r['treatment']} "
          f"--outcome {r['outcome']} --confounders {','.join(r['confounders'])} "
          f"--categorical {','.join(r['categorical'])} --text {','.join(r['text'])} "
          f"--out {out / 'report'}")
    return 0


def cmd_demo(args, progress) -> int:
    from ..datasets import load_sample
    from ..schema import InteractionLog

    estimator = _estimator(args)
    with progress.step("loading the bundled sample"):
        sample = load_sample()
    roles = dict(sample.roles, propensity=None)
    if args.no_text:
        roles["text"] = []
    else:
        progress.say("the profile text 'user_text' is a confounder: embedding it offline "
                     "with a small BERT model (cached after the first run)")
    # the sample's users recur across items: their rows share a fold
    log = InteractionLog(sample.data, **roles, unit="user_id")
    _plan(args, progress, f"{len(sample.data):,} rows from the bundled sample",
          f"estimating {sample.data[roles['item']].nunique()} items", _writes(args))
    _fit(estimator, log, progress)
    report = _report(estimator, roles, None, args, progress,
                     "Demo: causal effects of recommendations on the bundled sample",
                     refute=args.refute)
    with progress.step("ranking items and writing the report"):
        path = report.save(args.out)
    _print_summary(report.table(), path, truth=sample.truth)
    return 0
