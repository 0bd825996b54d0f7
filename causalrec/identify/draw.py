"""Pictures of a causal graph (matplotlib only, no graphviz).

Each node is its label in a rounded box sized to the text (long names wrap onto several
lines), so a label never overflows its node; arrows start and end at the boxes' edges. The
figure is laid out in inches from the labels' sizes: columns as wide as their widest box.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import networkx as nx

from ..utils.io import atomic_path
from .terms import ROLES

ROLE_COLORS = {
    "user": "#4c72b0", "item": "#dd8452", "context": "#55a868", "text": "#8172b3",
    "treatment": "#c44e52", "outcome": "#da8bc3", "unobserved": "#bbbbbb",
    "mediator": "#ccb974", "other": "#64b5cd",
}
# light fills keep black text readable whatever the role colour
_FILL_ALPHA = 0.35
_FONT_SIZE = 9
_WRAP = 18            # characters per label line
_CHAR_WIDTH = 0.075   # inches per character at _FONT_SIZE (DejaVu Sans, average)
_LINE_HEIGHT = 0.19   # inches per label line at _FONT_SIZE
_PAD = 0.14           # inches of box padding around the text


def _wrapped(label) -> str:
    text = str(label).replace("$", r"\$")  # '$' would start mathtext
    lines = textwrap.wrap(text, _WRAP, break_long_words=False, break_on_hyphens=False) or [""]
    # identifiers without spaces wrap at underscores, then hard at the width
    out = []
    for line in lines:
        while len(line) > _WRAP:
            cut = line.rfind("_", 1, _WRAP) + 1 or _WRAP
            out.append(line[:cut])
            line = line[cut:]
        out.append(line)
    return "\n".join(out)


def draw_graph(graph, path, title: str | None = None) -> Path:
    """Save a picture of the ``CausalGraph`` ``graph`` (PNG, SVG or PDF, by suffix), nodes
    coloured by role.

    Nodes are laid out in topological layers, causes left of effects; unobserved nodes are
    drawn with dashed outlines. Needs matplotlib only (no graphviz).
    """
    path = Path(path)
    if path.suffix.lower() not in {".png", ".svg", ".pdf"}:
        raise ValueError(f"cannot draw to {path.name}: use a .png, .svg or .pdf file")
    figure = graph_figure(graph, title)[0]
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # never a half-drawn file
        figure.savefig(f, format=path.suffix[1:].lower())
    return path


def graph_figure(graph, title: str | None = None):
    """The drawing as a matplotlib ``Figure`` (Agg canvas) and its node label ``Text``
    artists by node (each label's box is its ``get_bbox_patch()``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    graph._validate()
    g = graph.graph
    layers = [sorted(nodes, key=str) for nodes in nx.topological_generations(g)]
    labels = {n: _wrapped(n) for n in g}
    size = {n: (max(map(len, labels[n].split("\n"))) * _CHAR_WIDTH + 2 * _PAD,
                labels[n].count("\n") * _LINE_HEIGHT + _LINE_HEIGHT + 2 * _PAD) for n in g}
    gap_x, gap_y, margin, legend = 1.1, 0.35, 0.3, 1.3
    widths = [max(size[n][0] for n in layer) for layer in layers]
    heights = [sum(size[n][1] for n in layer) + gap_y * (len(layer) - 1) for layer in layers]
    width = sum(widths) + gap_x * (len(layers) - 1) + 2 * margin + legend
    height = max(heights) + 2 * margin + (0.4 if title else 0.0)
    pos, x = {}, margin
    for layer, w, h in zip(layers, widths, heights):
        y = margin + (max(heights) + h) / 2  # centre each column vertically
        for node in layer:
            y -= size[node][1] / 2
            pos[node] = (x + w / 2, y)
            y -= size[node][1] / 2 + gap_y
        x += w + gap_x
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    boxes = {}
    for node in g:
        role = g.nodes[node]["role"]
        boxes[node] = ax.text(
            *pos[node], labels[node], ha="center", va="center", fontsize=_FONT_SIZE, zorder=3,
            bbox=dict(boxstyle=f"round,pad={_PAD / (_FONT_SIZE / 72):.2f}",
                      facecolor=_tinted(ROLE_COLORS[role]), edgecolor=ROLE_COLORS[role],
                      linewidth=1.6, linestyle="--" if role == "unobserved" else "-"))
    # drawn after the boxes (zorder), whose sizes are then known: clipped at their edges
    layer_of = {n: i for i, layer in enumerate(layers) for n in layer}
    for u, v in g.edges:  # edges that skip a column bend around the boxes between
        bend = 0.12 if layer_of[v] - layer_of[u] > 1 else 0.0
        ax.annotate("", xy=pos[v], xytext=pos[u], zorder=4,
                    arrowprops=dict(arrowstyle="-|>", color="#555555", lw=1.0,
                                    connectionstyle=f"arc3,rad={bend}",
                                    shrinkA=2, shrinkB=2, mutation_scale=12,
                                    patchA=boxes[u].get_bbox_patch(),
                                    patchB=boxes[v].get_bbox_patch()))
    used = [r for r in ROLES if r in set(nx.get_node_attributes(g, "role").values())]
    ax.legend(handles=[Line2D([], [], marker="s", linestyle="", markersize=10,
                              markerfacecolor=_tinted(ROLE_COLORS[r]),
                              markeredgecolor=ROLE_COLORS[r], label=r) for r in used],
              loc="upper right", frameon=False, fontsize=8)
    if title:
        ax.text(width / 2, height - 0.25, title, ha="center", va="center", fontsize=11)
    return fig, boxes


def _tinted(colour: str) -> tuple:
    """The role colour blended with white (text on it stays legible)."""
    from matplotlib.colors import to_rgb

    return tuple(_FILL_ALPHA * c + (1 - _FILL_ALPHA) for c in to_rgb(colour))
