"""Pictures of a causal graph (matplotlib only, no graphviz)."""
from __future__ import annotations

from pathlib import Path

import networkx as nx

from ..utils.io import atomic_path
from .graph import ROLES

ROLE_COLORS = {
    "user": "#4c72b0", "item": "#dd8452", "context": "#55a868", "text": "#8172b3",
    "treatment": "#c44e52", "outcome": "#da8bc3", "unobserved": "#bbbbbb",
    "mediator": "#ccb974", "other": "#64b5cd",
}


def draw_graph(graph, path, title: str | None = None) -> Path:
    """Save a picture of the ``CausalGraph`` ``graph`` (PNG, SVG or PDF, by suffix), nodes
    coloured by role.

    Nodes are laid out in topological layers, causes left of effects; unobserved nodes
    are drawn with dashed outlines. Needs matplotlib only (no graphviz).
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    graph._validate()
    path = Path(path)
    if path.suffix.lower() not in {".png", ".svg", ".pdf"}:
        raise ValueError(f"cannot draw to {path.name}: use a .png, .svg or .pdf file")
    g = graph.graph.copy()
    for layer, nodes in enumerate(nx.topological_generations(g)):
        for node in nodes:
            g.nodes[node]["layer"] = layer
    pos = nx.multipartite_layout(g, subset_key="layer")
    n_layers = 1 + max(nx.get_node_attributes(g, "layer").values())
    fig = Figure(figsize=(2.2 + 2.2 * n_layers, 1.5 + 0.6 * len(g)))
    ax = fig.subplots()
    ax.set_axis_off()
    nx.draw_networkx_edges(g, pos, ax=ax, arrowsize=14, node_size=1800,
                           edge_color="#555555")
    for dashed in (False, True):
        nodes = [n for n in g if (g.nodes[n]["role"] == "unobserved") == dashed]
        if not nodes:
            continue
        drawn = nx.draw_networkx_nodes(
            g, pos, nodelist=nodes, ax=ax, node_size=1800,
            node_color=[ROLE_COLORS[g.nodes[n]["role"]] for n in nodes],
            edgecolors="black", linewidths=1.5 if dashed else 0.5)
        if dashed:
            drawn.set_linestyle("--")
    nx.draw_networkx_labels(g, pos, ax=ax, font_size=8)
    used = [r for r in ROLES if r in set(nx.get_node_attributes(g, "role").values())]
    ax.legend(handles=[Line2D([], [], marker="o", linestyle="", markersize=10,
                              markerfacecolor=ROLE_COLORS[r], markeredgecolor="black",
                              label=r) for r in used],
              loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # never a half-drawn file
        fig.savefig(f, format=path.suffix[1:].lower())
    return path
