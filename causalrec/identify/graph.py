"""Causal graphs of a recommender: which columns to adjust for, and why.

A :class:`CausalGraph` is a DAG over column names with one treatment (exposure), one outcome
and node roles. It finds a backdoor adjustment set made of observed columns (checked by
d-separation), says which backdoor path stays open when none exists, maps the set to the
``confounders / categorical / text`` arguments of ``estimate_item_effects``, and converts to
DoWhy, GML and pictures.
"""
from __future__ import annotations

import copy
from pathlib import Path

import networkx as nx
import pandas as pd

from ..schema import _as_list
from .backdoor import _format_path, _is_d_separator, _open_path, smallest_frontdoor_set
from .draw import draw_graph
from .export import to_dowhy, to_gml
from .terms import ROLES, GraphError, NotIdentifiableError

__all__ = ["CausalGraph", "GraphError", "NotIdentifiableError", "ROLES"]


class CausalGraph:
    """A causal DAG with a treatment, an outcome and node roles.

    Parameters
    ----------
    graph : networkx.DiGraph or iterable of ``(cause, effect)`` pairs. Node names are column
        names of the log (unobserved nodes excepted). A DiGraph is copied; a ``role`` node
        attribute already on it (e.g. read from GML) is kept unless ``roles`` overrides it.
    treatment, outcome : node names.
    unobserved : nodes that are not columns of the log (latent confounders).
    roles : ``{node: role}`` with roles from :data:`ROLES`. The treatment, outcome and
        unobserved nodes get their roles automatically; other nodes default to ``"other"``.

    Raises
    ------
    GraphError
        When the graph has a cycle, the treatment or outcome is missing or they coincide, a
        name in ``unobserved`` / ``roles`` is not a node, or roles contradict each other.

    Edit with :meth:`add_edge`, :meth:`remove_edge`, :meth:`add_node`, :meth:`remove_node`
    (each validates and returns ``self``); ``.graph`` is the underlying networkx DiGraph,
    re-validated whenever the graph is queried.
    """

    def __init__(self, graph, treatment: str, outcome: str, unobserved=(), roles=None):
        self.graph = _as_digraph(graph)
        self.treatment = treatment
        self.outcome = outcome
        self._assign_roles(_as_list(unobserved), dict(roles or {}))
        self._validate()

    # ----------------------------------------------------------------- construction
    @classmethod
    def recommendation(cls, treatment: str, outcome: str, user=(), item=(), context=(),
                       text=(), unobserved=()) -> "CausalGraph":
        """The standard exposure graph of a recommender, a starting point to edit.

        Every user, item, context and text node causes both the exposure (``treatment``) and
        the ``outcome``; the exposure causes the outcome. ``unobserved`` nodes are latent
        common causes of exposure and outcome (listing one makes the backdoor effect
        non-identifiable until the analyst edits the graph, which is the point).
        """
        features = {}
        for role, nodes in (("user", user), ("item", item), ("context", context),
                            ("text", text), ("unobserved", unobserved)):
            for node in _as_list(nodes):
                if node in features or node in (treatment, outcome):
                    raise GraphError(f"node {node!r} is given two roles")
                features[node] = role
        graph = nx.DiGraph()
        graph.add_edge(treatment, outcome)
        for node in features:
            graph.add_edge(node, treatment)
            graph.add_edge(node, outcome)
        return cls(graph, treatment, outcome, unobserved=unobserved,
                   roles={n: r for n, r in features.items() if r != "unobserved"})

    @classmethod
    def from_gml(cls, path, treatment: str | None = None, outcome: str | None = None
                 ) -> "CausalGraph":
        """Read a graph written by :meth:`to_gml` (a path, or GML text).

        Roles come from the ``role`` node attributes; treatment and outcome from the graph
        attributes unless given here.
        """
        text = str(path)
        graph = (nx.parse_gml(text) if text.lstrip().startswith(("graph", "directed"))
                 else nx.read_gml(path))
        if not graph.is_directed():
            raise GraphError("the GML graph is undirected; add 'directed 1'")
        treatment = treatment or graph.graph.get("treatment")
        outcome = outcome or graph.graph.get("outcome")
        if treatment is None or outcome is None:
            raise GraphError("the GML file names no treatment/outcome; pass them to from_gml")
        unobserved = [n for n, r in graph.nodes(data="role") if r == "unobserved"]
        return cls(graph, treatment, outcome, unobserved=unobserved)

    def copy(self) -> "CausalGraph":
        return copy.deepcopy(self)

    # ----------------------------------------------------------------- editing
    def add_node(self, node: str, role: str = "other") -> "CausalGraph":
        """Add (or re-role) a node; ``role="unobserved"`` marks it latent."""
        return self._edit(lambda g: g.add_node(node, role=role))

    def remove_node(self, node: str) -> "CausalGraph":
        self._require_nodes([node])
        return self._edit(lambda g: g.remove_node(node))

    def add_edge(self, cause: str, effect: str) -> "CausalGraph":
        """Add ``cause -> effect``; new nodes get role ``"other"``. Raises on a cycle."""
        def edit(g):
            for node in (cause, effect):
                if node not in g:
                    g.add_node(node, role="other")
            g.add_edge(cause, effect)
        return self._edit(edit)

    def remove_edge(self, cause: str, effect: str) -> "CausalGraph":
        if not self.graph.has_edge(cause, effect):
            raise GraphError(f"the graph has no edge {cause!r} -> {effect!r}")
        return self._edit(lambda g: g.remove_edge(cause, effect))

    def _edit(self, change) -> "CausalGraph":
        # Edit a copy so a rejected change (say a cycle) leaves the graph as it was.
        candidate = self.graph.copy()
        change(candidate)
        previous, self.graph = self.graph, candidate
        try:
            self._validate()
        except GraphError:
            self.graph = previous
            raise
        return self

    # ----------------------------------------------------------------- roles
    @property
    def roles(self) -> dict[str, str]:
        """``{node: role}`` for every node."""
        return dict(self.graph.nodes(data="role"))

    @property
    def unobserved(self) -> list[str]:
        return sorted(n for n, r in self.graph.nodes(data="role") if r == "unobserved")

    @property
    def observed(self) -> list[str]:
        return sorted(n for n, r in self.graph.nodes(data="role") if r != "unobserved")

    def _assign_roles(self, unobserved: list[str], roles: dict) -> None:
        self._require_nodes(unobserved, what="unobserved node")
        self._require_nodes(list(roles), what="node in roles")
        for node, role in roles.items():
            if node in unobserved and role != "unobserved":
                raise GraphError(f"node {node!r} is listed as unobserved but given role {role!r}")
        for node in self.graph.nodes:
            role = roles.get(node, self.graph.nodes[node].get("role", "other"))
            if node in unobserved:
                role = "unobserved"
            if node == self.treatment or node == self.outcome:
                expected = "treatment" if node == self.treatment else "outcome"
                if node in roles and roles[node] != expected:
                    raise GraphError(f"the {expected} {node!r} cannot have role {roles[node]!r}")
                if node in unobserved:
                    raise GraphError(f"the {expected} {node!r} cannot be unobserved")
                role = expected
            self.graph.nodes[node]["role"] = role

    def _require_nodes(self, nodes, what: str = "node") -> None:
        unknown = [n for n in nodes if n not in self.graph]
        if unknown:
            raise GraphError(f"unknown {what}(s) {unknown}; the graph's nodes are "
                             f"{sorted(map(str, self.graph.nodes))}")

    def _validate(self) -> None:
        g = self.graph
        for name, node in (("treatment", self.treatment), ("outcome", self.outcome)):
            if not isinstance(node, str):
                raise GraphError(f"the {name} must be a node name (str), got {node!r}")
            if node not in g:
                raise GraphError(f"the {name} {node!r} is not a node of the graph; nodes are "
                                 f"{sorted(map(str, g.nodes))}")
        if self.treatment == self.outcome:
            raise GraphError(f"treatment and outcome are the same node {self.treatment!r}")
        bad_names = [n for n in g.nodes if not isinstance(n, str)]
        if bad_names:
            raise GraphError(f"node names must be column names (str), got {bad_names[:5]}")
        if not nx.is_directed_acyclic_graph(g):
            cycle = nx.find_cycle(g)
            raise GraphError("the graph has a cycle: "
                             + " -> ".join([u for u, _ in cycle] + [cycle[0][0]]))
        for node, role in g.nodes(data="role"):
            if role not in ROLES:
                raise GraphError(f"node {node!r} has unknown role {role!r}; roles are {ROLES}")
            if role == "treatment" and node != self.treatment:
                raise GraphError(f"node {node!r} has role 'treatment' but the treatment is "
                                 f"{self.treatment!r}")
            if role == "outcome" and node != self.outcome:
                raise GraphError(f"node {node!r} has role 'outcome' but the outcome is "
                                 f"{self.outcome!r}")
        for node, expected in ((self.treatment, "treatment"), (self.outcome, "outcome")):
            if g.nodes[node].get("role") != expected:
                raise GraphError(f"the {expected} {node!r} has role {g.nodes[node].get('role')!r}")

    # ----------------------------------------------------------------- identification
    def _backdoor_graph(self) -> nx.DiGraph:
        """The graph with the treatment's outgoing edges cut: only backdoor paths remain."""
        g = self.graph.copy()
        g.remove_edges_from(list(self.graph.out_edges(self.treatment)))
        return g

    def _allowed(self) -> set[str]:
        """Observed nodes that may be adjusted for: not the treatment nor its descendants."""
        forbidden = nx.descendants(self.graph, self.treatment) | {self.treatment, self.outcome}
        return set(self.observed) - forbidden

    def is_valid_adjustment(self, nodes) -> bool:
        """Whether ``nodes`` satisfies the backdoor criterion for (treatment, outcome).

        Valid means: all observed, none a descendant of the treatment, and d-separating the
        treatment from the outcome once the treatment's outgoing edges are removed.
        """
        self._validate()
        nodes = set(_as_list(nodes))
        self._require_nodes(sorted(nodes))
        if not nodes <= self._allowed():
            return False
        return _is_d_separator(self._backdoor_graph(), {self.treatment}, {self.outcome}, nodes)

    def adjustment_set(self) -> list[str]:
        """A minimal valid backdoor adjustment set of observed nodes (sorted).

        Starts from the observed non-descendants of the treatment that are ancestors of the
        treatment or outcome (a valid set whenever any exists, van der Zander et al. 2019)
        and drops nodes one at a time while d-separation holds; a separator from which no
        single node can be dropped is minimal (Tian, Paz & Pearl 1998).

        Raises
        ------
        NotIdentifiableError
            When no set of observed nodes blocks every backdoor path; the message names an
            open one (through an unobserved node) and mentions a front-door set if any.
        """
        self._validate()
        g_bd = self._backdoor_graph()
        t, y = self.treatment, self.outcome
        ancestors = set().union(nx.ancestors(g_bd, t), nx.ancestors(g_bd, y))
        candidate = sorted(ancestors & self._allowed())
        if not _is_d_separator(g_bd, {t}, {y}, set(candidate)):
            path = _open_path(g_bd, t, y, set(candidate))
            message = (f"the effect of {t!r} on {y!r} is not identifiable by backdoor "
                       f"adjustment: no set of observed nodes blocks every backdoor path")
            if path:
                message += "; open path: " + _format_path(self.graph, path)
            try:
                message += (f". A front-door adjustment through {self.frontdoor_set()} is "
                            "possible (see frontdoor_set)")
            except NotIdentifiableError:
                message += (". Measure a node on that path, or remove the edge if the "
                            "assumption is wrong")
            raise NotIdentifiableError(message, path)
        for node in list(candidate):
            smaller = set(candidate) - {node}
            if _is_d_separator(g_bd, {t}, {y}, smaller):
                candidate.remove(node)
        return candidate

    def open_backdoor_path(self, adjustment=()) -> list[str] | None:
        """One backdoor path left open by ``adjustment`` (treatment first), or None."""
        self._validate()
        nodes = set(_as_list(adjustment))
        self._require_nodes(sorted(nodes))
        return _open_path(self._backdoor_graph(), self.treatment, self.outcome, nodes)

    def frontdoor_set(self) -> list[str]:
        """A smallest set of observed mediators satisfying Pearl's front-door criterion.

        (i) it intercepts every directed path treatment -> outcome; (ii) no backdoor path
        from the treatment to it is open; (iii) every backdoor path from it to the outcome
        is blocked by the treatment. Raises :class:`NotIdentifiableError` if none exists.
        """
        self._validate()
        found = smallest_frontdoor_set(self.graph, self.treatment, self.outcome,
                                       set(self.observed), self._backdoor_graph())
        if found is None:
            raise NotIdentifiableError(
                f"no observed set of mediators satisfies the front-door criterion for "
                f"{self.treatment!r} -> {self.outcome!r}")
        return found

    # ----------------------------------------------------------------- data
    def adjustment_columns(self, df: pd.DataFrame) -> dict[str, list[str]]:
        """Map the adjustment set to ``estimate_item_effects`` arguments.

        Returns ``dict(confounders=[...], categorical=[...], text=[...])``: text-role nodes
        go to ``text``; other nodes go to ``confounders`` when their column is numeric or
        boolean and to ``categorical`` otherwise.

        Raises
        ------
        GraphError
            When the treatment, outcome or an adjustment node is not a column of ``df``, or
            a text-role column does not hold strings.
        NotIdentifiableError
            When no backdoor adjustment set exists.
        """
        nodes = self.adjustment_set()
        missing = [c for c in [self.treatment, self.outcome, *nodes] if c not in df.columns]
        if missing:
            raise GraphError(f"graph node(s) {missing} are not columns of the data; rename "
                             "them, or mark them unobserved if they were not logged")
        columns: dict[str, list[str]] = {"confounders": [], "categorical": [], "text": []}
        for node in nodes:
            dtype = df[node].dtype
            numeric = pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)
            if self.graph.nodes[node]["role"] == "text":
                if numeric:
                    raise GraphError(f"node {node!r} has role 'text' but its column has "
                                     f"dtype {dtype}; give it another role")
                columns["text"].append(node)
            else:
                columns["confounders" if numeric else "categorical"].append(node)
        return columns

    def merge_adjustment(self, df: pd.DataFrame, confounders=(), categorical=(),
                         text=()) -> dict[str, list[str]]:
        """Columns given by hand plus this graph's ``adjustment_columns(df)``, per role, in
        that order and without duplicates."""
        merged = {"confounders": _as_list(confounders), "categorical": _as_list(categorical),
                  "text": _as_list(text)}
        for role, columns in self.adjustment_columns(df).items():
            merged[role] += [c for c in columns if c not in merged[role]]
        return merged

    def to_dowhy(self, df: pd.DataFrame, **kwargs):
        """A ``dowhy.CausalModel`` on ``df`` with this graph (see ``identify.export``)."""
        return to_dowhy(self, df, **kwargs)

    # ----------------------------------------------------------------- output
    def to_gml(self, path=None) -> str | None:
        """Write GML (roles as node attributes, treatment/outcome as graph attributes); with
        ``path=None`` the GML text is returned instead."""
        return to_gml(self, path)

    def draw(self, path, title: str | None = None) -> Path:
        """Save a picture (PNG, SVG or PDF, by suffix), nodes coloured by role, causes left of
        effects (see ``identify.draw``)."""
        return draw_graph(self, path, title)

    def summary(self) -> pd.DataFrame:
        """One row per node: role, observed, and whether it is in the adjustment set."""
        try:
            adjust = set(self.adjustment_set())
        except NotIdentifiableError:
            adjust = set()
        rows = [{"node": n, "role": r, "observed": r != "unobserved", "adjust": n in adjust}
                for n, r in self.graph.nodes(data="role")]
        return pd.DataFrame(rows).sort_values(["role", "node"], ignore_index=True)

    def __repr__(self) -> str:
        return (f"CausalGraph(treatment={self.treatment!r}, outcome={self.outcome!r}, "
                f"{self.graph.number_of_nodes()} nodes, {self.graph.number_of_edges()} edges, "
                f"unobserved={self.unobserved})")


def _as_digraph(graph) -> nx.DiGraph:
    if isinstance(graph, CausalGraph):
        return graph.graph.copy()
    if isinstance(graph, nx.Graph):
        if not graph.is_directed():
            raise GraphError("the graph is undirected; causal graphs need directed edges")
        if graph.is_multigraph():
            raise GraphError("multigraphs are not supported; pass a networkx DiGraph")
        return nx.DiGraph(graph)
    try:
        edges = [tuple(edge) for edge in graph]
    except TypeError:
        raise GraphError(f"expected a networkx DiGraph or a list of (cause, effect) pairs, "
                         f"got {type(graph).__name__}") from None
    bad = [e for e in edges if len(e) != 2]
    if bad:
        raise GraphError(f"edges must be (cause, effect) pairs, got {bad[0]!r}")
    return nx.DiGraph(edges)
