"""``causalrec net``: own and net effects of every item, the top cannibalising pairs and the
report with its "own versus net" section."""
from __future__ import annotations

from pathlib import Path

__all__ = ["cmd_net"]


def cmd_net(args, progress) -> int:
    from ..estimate import NetEffectEstimator
    from ..reporting import EffectReport
    from ..utils.io import table_bytes, write_files
    from .commands import _estimator, _read, _recommendation_graph, _writes

    estimator = _estimator(args)  # a bad flag fails before the log is read
    log, roles, graph = _read(args, progress, _writes(args),
                              work="estimating own and net effects of {items} items")
    with progress.step("estimating own and net effects"):
        net = NetEffectEstimator(estimator=estimator).fit(log, unit=args.unit)
    with progress.step("pairwise spillover of the top items"):
        pairs = net.spillover_pairs(top=args.top, category=args.category)
    write_files(Path(args.out), {"spillover_pairs.csv": table_bytes(pairs, "csv")})
    with progress.step("writing the report"):
        path = EffectReport(net.item_estimator_, graph=graph or _recommendation_graph(roles),
                            title=args.title, top=args.top, seed=args.seed, net=net).save(args.out)
    eff = net.effects_
    ok = eff[eff["status"] == "ok"]
    print(f"Report: {path.resolve()}")
    print(f"Items: {len(eff)} ({len(ok)} ok); net clearly below own (spillover interval "
          f"below 0): {int((ok['spillover_ci_high'] < 0).sum())}")
    print("Most negative spillover (net - own, 95% interval):")
    for row in ok.nsmallest(5, "spillover").itertuples():
        print(f"  {row.item}: own {row.own_ate:+.4f}, net {row.net_ate:+.4f}, spillover "
              f"{row.spillover:+.4f} [{row.spillover_ci_low:+.4f}, {row.spillover_ci_high:+.4f}]")
    return 0
