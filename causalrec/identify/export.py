"""A ``CausalGraph`` as a ``dowhy.CausalModel`` and as GML."""
from __future__ import annotations

import networkx as nx
import pandas as pd

from ..utils.io import write_text
from .terms import GraphError


def to_dowhy(graph, df: pd.DataFrame, **kwargs):
    """A ``dowhy.CausalModel`` on ``df`` with the ``CausalGraph`` ``graph`` (passed as a
    networkx DiGraph).

    DoWhy treats graph nodes without a column as unobserved, so every observed node must
    be a column and no unobserved node may be one (else :class:`GraphError`).
    """
    graph._validate()
    missing = [n for n in graph.observed if n not in df.columns]
    if missing:
        raise GraphError(f"observed graph node(s) {missing} are not columns of the data")
    clash = [n for n in graph.unobserved if n in df.columns]
    if clash:
        raise GraphError(f"node(s) {clash} are marked unobserved but are columns of the "
                         "data; DoWhy would treat them as observed")
    from ..utils.extras import require
    CausalModel = require("dowhy", "to_dowhy / deep_dive").CausalModel
    # Only structure goes to DoWhy: it adds its own node attributes.
    structure = nx.DiGraph(list(graph.graph.edges))
    structure.add_nodes_from(graph.graph.nodes)
    return CausalModel(data=df, treatment=graph.treatment, outcome=graph.outcome,
                       graph=structure, **kwargs)


def to_gml(graph, path=None) -> str | None:
    """GML of the ``CausalGraph`` ``graph`` (roles as node attributes, treatment/outcome as
    graph attributes), written to ``path``, or returned as text when ``path`` is None."""
    graph._validate()
    g = nx.DiGraph()
    g.graph.update(treatment=graph.treatment, outcome=graph.outcome)
    g.add_nodes_from((n, {"role": r}) for n, r in graph.graph.nodes(data="role"))
    g.add_edges_from(graph.graph.edges)
    if path is None:
        return "\n".join(nx.generate_gml(g))
    write_text(path, "".join(line + "\n" for line in nx.generate_gml(g)))  # atomically
    return None
