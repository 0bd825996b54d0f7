"""d-separation searches on a causal graph: an open backdoor path to name in an error, and
a smallest front-door set of mediators."""
from __future__ import annotations

import itertools

import networkx as nx

_MAX_PATHS = 10_000      # paths searched for an open backdoor path to name in an error
_MAX_FRONTDOOR_SETS = 4096

# networkx renamed d_separated to is_d_separator in 3.3 and removed the old name in 3.5.
_is_d_separator = getattr(nx, "is_d_separator", None) or nx.d_separated


def smallest_frontdoor_set(g: nx.DiGraph, t: str, y: str, observed: set,
                           g_t: nx.DiGraph) -> list[str] | None:
    """A smallest set of observed mediators satisfying Pearl's front-door criterion in ``g``
    (``g_t``: ``g`` without the treatment's outgoing edges), or None."""
    mediators = sorted(
        (nx.descendants(g, t) & nx.ancestors(g, y) & observed) - {t, y})
    tried = 0
    for size in range(1, len(mediators) + 1):
        for subset in itertools.combinations(mediators, size):
            tried += 1
            if tried > _MAX_FRONTDOOR_SETS:
                break
            m = set(subset)
            cut = g.copy()
            cut.remove_nodes_from(m)
            if nx.has_path(cut, t, y):
                continue
            if not _is_d_separator(g_t, {t}, m, set()):
                continue
            g_m = g.copy()
            g_m.remove_edges_from(list(g.out_edges(m)))
            if _is_d_separator(g_m, m, {y}, {t}):
                return sorted(m)
    return None


def _open_path(g_bd: nx.DiGraph, source: str, target: str, given: set) -> list[str] | None:
    """The shortest path from source to target that is d-connected given ``given``."""
    # A collider is open when it or one of its descendants is conditioned on.
    opens_collider = set(given).union(*(nx.ancestors(g_bd, z) for z in given))
    skeleton = g_bd.to_undirected(as_view=True)
    if not nx.has_path(skeleton, source, target):
        return None
    for i, path in enumerate(nx.shortest_simple_paths(skeleton, source, target)):
        if i >= _MAX_PATHS:
            return None
        if all(_passes(g_bd, a, b, c, given, opens_collider)
               for a, b, c in zip(path, path[1:], path[2:])):
            return path
    return None


def _passes(g: nx.DiGraph, a, b, c, given: set, opens_collider: set) -> bool:
    if g.has_edge(a, b) and g.has_edge(c, b):
        return b in opens_collider
    return b not in given


def _format_path(g: nx.DiGraph, path: list[str]) -> str:
    parts = [path[0]]
    for a, b in zip(path, path[1:]):
        parts.append(("-> " if g.has_edge(a, b) else "<- ") + b)
    return " ".join(parts)
