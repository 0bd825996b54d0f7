import itertools
import warnings

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from causalrec.identify import CausalGraph, GraphError, NotIdentifiableError

_d_sep = getattr(nx, "is_d_separator", None) or nx.d_separated


def graph(edges, unobserved=(), **roles):
    return CausalGraph(edges, "T", "Y", unobserved=unobserved, roles=roles or None)


CONFOUNDER = [("X", "T"), ("X", "Y"), ("T", "Y")]
M_GRAPH = [("A", "T"), ("A", "C"), ("B", "C"), ("B", "Y"), ("T", "Y")]
BUTTERFLY = M_GRAPH + [("C", "T"), ("C", "Y")]          # C is a collider and a confounder
MEDIATOR = [("X", "T"), ("X", "Y"), ("T", "M"), ("M", "Y")]
LATENT = [("U", "T"), ("U", "Y"), ("T", "Y"), ("X", "T")]
LATENT_BLOCKED = [("U", "X"), ("X", "T"), ("U", "Y"), ("T", "Y")]
FRONTDOOR = [("U", "T"), ("U", "Y"), ("T", "M"), ("M", "Y")]


def brute_force_valid_sets(edges, unobserved=()):
    """Every backdoor adjustment set, by exhaustive search (independent of CausalGraph)."""
    g = nx.DiGraph(edges)
    allowed = sorted(set(g) - nx.descendants(g, "T") - {"T", "Y"} - set(unobserved))
    g_bd = g.copy()
    g_bd.remove_edges_from(list(g.out_edges("T")))
    return [set(s) for k in range(len(allowed) + 1)
            for s in itertools.combinations(allowed, k) if _d_sep(g_bd, {"T"}, {"Y"}, set(s))]


def minimal_sets(valid):
    return [s for s in valid if not any(o < s for o in valid)]


# ----------------------------------------------------------------- known answers
@pytest.mark.parametrize("edges, unobserved, expected", [
    ([("T", "Y")], (), set()),
    (CONFOUNDER, (), {"X"}),
    (M_GRAPH, (), set()),                   # adjusting for the collider C would open a path
    (MEDIATOR, (), {"X"}),                  # the mediator M must not be adjusted for
    (LATENT_BLOCKED, ["U"], {"X"}),         # the latent path is blocked by an observed node
    ([("X1", "X2"), ("X2", "T"), ("X1", "Y"), ("T", "Y"), ("T", "D")], (), None),
])
def test_adjustment_set_known_answers(edges, unobserved, expected):
    g = graph(edges, unobserved)
    found = set(g.adjustment_set())
    if expected is None:                    # two minimal answers ({X1} or {X2}): check both
        assert found in ({"X1"}, {"X2"})
    else:
        assert found == expected
    assert g.is_valid_adjustment(found)
    assert g.open_backdoor_path(found) is None


def test_colliders_mediators_and_descendants_are_invalid():
    assert not graph(M_GRAPH).is_valid_adjustment(["C"])
    assert graph(M_GRAPH).is_valid_adjustment(["C", "A"])
    assert graph(M_GRAPH).open_backdoor_path(["C"]) == ["T", "A", "C", "B", "Y"]
    assert not graph(MEDIATOR).is_valid_adjustment(["X", "M"])
    butterfly = graph(BUTTERFLY)
    assert set(butterfly.adjustment_set()) in ({"A", "C"}, {"B", "C"})
    assert not butterfly.is_valid_adjustment(["C"])
    assert not butterfly.is_valid_adjustment(["A", "B"])


def test_not_identifiable_names_the_open_path():
    g = graph(LATENT, unobserved=["U"])
    with pytest.raises(NotIdentifiableError, match="T <- U -> Y") as info:
        g.adjustment_set()
    assert info.value.path == ["T", "U", "Y"]
    assert isinstance(info.value, GraphError) and isinstance(info.value, ValueError)
    with pytest.raises(NotIdentifiableError):
        g.frontdoor_set()                   # the direct edge T -> Y leaves no front door


def test_frontdoor():
    g = graph(FRONTDOOR, unobserved=["U"])
    with pytest.raises(NotIdentifiableError, match="front-door adjustment through \\['M'\\]"):
        g.adjustment_set()
    assert g.frontdoor_set() == ["M"]
    g.add_edge("U", "M")                    # a confounded mediator breaks condition (ii)
    with pytest.raises(NotIdentifiableError):
        g.frontdoor_set()


def test_minimal_sets_match_exhaustive_search_on_random_dags():
    rng = np.random.default_rng(0)
    n_identified = n_not = 0
    for _ in range(40):
        names = ["T", "Y"] + [f"V{i}" for i in range(6)]
        order = rng.permutation(names)
        edges = [(a, b) for i, a in enumerate(order) for b in order[i + 1:]
                 if rng.random() < 0.35]
        g_nx = nx.DiGraph(edges)
        g_nx.add_nodes_from(names)
        unobserved = [n for n in names[2:] if rng.random() < 0.25]
        g = CausalGraph(g_nx, "T", "Y", unobserved=unobserved)
        valid = brute_force_valid_sets(g_nx, unobserved)
        if not valid:
            n_not += 1
            with pytest.raises(NotIdentifiableError) as info:
                g.adjustment_set()
            assert info.value.path[0] == "T" and info.value.path[-1] == "Y"
            continue
        n_identified += 1
        found = set(g.adjustment_set())
        assert found in valid
        assert found in minimal_sets(valid)  # no proper subset is valid
    assert n_identified >= 10 and n_not >= 3  # both branches exercised


# ----------------------------------------------------------------- recommendation graph
def test_recommendation_graph():
    g = CausalGraph.recommendation("recommended", "clicked", user=["user_activity", "device"],
                                   item=["item_provider"], context=["hour"],
                                   text=["user_text", "item_text"])
    features = {"user_activity", "device", "item_provider", "hour", "user_text", "item_text"}
    assert set(g.adjustment_set()) == features
    assert g.roles["device"] == "user" and g.roles["item_text"] == "text"
    assert g.roles["recommended"] == "treatment" and g.roles["clicked"] == "outcome"
    assert g.graph.has_edge("recommended", "clicked")
    # Analyst edits: a mediator is not adjusted for; a feature that only drives exposure
    # is not needed.
    edited = g.copy().add_edge("recommended", "dwell").add_edge("dwell", "clicked")
    edited.remove_edge("hour", "clicked")
    assert set(edited.adjustment_set()) == features - {"hour"}
    assert set(g.adjustment_set()) == features        # the copy left g alone
    latent = CausalGraph.recommendation("recommended", "clicked", user=["user_activity"],
                                        unobserved=["taste"])
    assert latent.unobserved == ["taste"]
    with pytest.raises(NotIdentifiableError, match="recommended <- taste -> clicked"):
        latent.adjustment_set()
    with pytest.raises(GraphError, match="two roles"):
        CausalGraph.recommendation("r", "c", user=["x"], context=["x"])


# ----------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("kwargs, message", [
    (dict(graph=[("T", "Y"), ("Y", "X"), ("X", "T")]), "cycle"),
    (dict(treatment="Z"), "treatment 'Z' is not a node"),
    (dict(outcome="Z"), "outcome 'Z' is not a node"),
    (dict(outcome="T"), "same node"),
    (dict(unobserved=["nope"]), "unknown unobserved node"),
    (dict(roles={"nope": "user"}), "unknown node in roles"),
    (dict(roles={"X": "wizard"}), "unknown role 'wizard'"),
    (dict(roles={"X": "treatment"}), "role 'treatment' but the treatment is 'T'"),
    (dict(roles={"T": "user"}), "treatment 'T' cannot have role 'user'"),
    (dict(unobserved=["T"]), "cannot be unobserved"),
    (dict(unobserved=["X"], roles={"X": "user"}), "listed as unobserved"),
    (dict(graph=nx.Graph(CONFOUNDER)), "undirected"),
    (dict(graph=[("T", "Y", "X")]), "pairs"),
    (dict(graph=[(1, "T"), ("T", "Y")]), "must be column names"),
])
def test_bad_graphs_raise(kwargs, message):
    args = dict(graph=CONFOUNDER, treatment="T", outcome="Y") | kwargs
    with pytest.raises(GraphError, match=message):
        CausalGraph(args.pop("graph"), args.pop("treatment"), args.pop("outcome"), **args)


def test_rejected_edit_leaves_graph_unchanged():
    g = graph(CONFOUNDER)
    with pytest.raises(GraphError, match="cycle"):
        g.add_edge("Y", "X")
    assert not g.graph.has_edge("Y", "X")
    with pytest.raises(GraphError, match="no edge"):
        g.remove_edge("Y", "X")
    with pytest.raises(GraphError, match="treatment 'T' is not a node"):
        g.remove_node("T")
    with pytest.raises(GraphError, match="unknown node"):
        g.is_valid_adjustment(["nope"])
    assert set(g.graph.edges) == set(CONFOUNDER)
    g.add_node("X", role="unobserved")
    with pytest.raises(NotIdentifiableError):
        g.adjustment_set()


# ----------------------------------------------------------------- columns
def log_frame(n=20):
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "rec": rng.integers(0, 2, n), "click": rng.integers(0, 2, n),
        "activity": rng.normal(size=n), "is_new": rng.random(n) < 0.5,
        "device": rng.choice(["ios", "web"], n), "bio": rng.choice(["cats", "jazz"], n),
    })


def test_adjustment_columns():
    g = CausalGraph.recommendation("rec", "click", user=["activity", "is_new", "device"],
                                   text=["bio"])
    cols = g.adjustment_columns(log_frame())
    assert cols == {"confounders": ["activity", "is_new"], "categorical": ["device"],
                    "text": ["bio"]}
    with pytest.raises(GraphError, match=r"\['device'\] are not columns"):
        g.adjustment_columns(log_frame().drop(columns="device"))
    with pytest.raises(GraphError, match="'click'"):
        g.adjustment_columns(log_frame().drop(columns="click"))
    numeric_text = CausalGraph.recommendation("rec", "click", text=["activity"])
    with pytest.raises(GraphError, match="role 'text'"):
        numeric_text.adjustment_columns(log_frame())
    with pytest.raises(NotIdentifiableError):
        CausalGraph.recommendation("rec", "click", unobserved=["u"]).adjustment_columns(
            log_frame())


def test_merge_adjustment_keeps_hand_given_columns_first_without_duplicates():
    g = CausalGraph.recommendation("rec", "click", user=["activity", "is_new", "device"],
                                   text=["bio"])
    merged = g.merge_adjustment(log_frame(), confounders="is_new", categorical=["other"])
    assert merged == {"confounders": ["is_new", "activity"], "categorical": ["other", "device"],
                      "text": ["bio"]}
    with pytest.raises(GraphError, match="not columns"):
        g.merge_adjustment(log_frame().drop(columns="bio"))


# ----------------------------------------------------------------- DoWhy
DOWHY_CASES = [CONFOUNDER, M_GRAPH, BUTTERFLY, MEDIATOR,
               [("X1", "X2"), ("X2", "T"), ("X1", "Y"), ("T", "Y")],
               [("Z", "T"), ("T", "Y"), ("W", "Y"), ("X", "T"), ("X", "Y")]]


def dowhy_backdoor(g, method):
    df = pd.DataFrame(np.zeros((5, len(g.observed))), columns=g.observed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimand = g.to_dowhy(df).identify_effect(method_name=method)
    return estimand


@pytest.mark.parametrize("edges", DOWHY_CASES)
def test_dowhy_agrees(edges):
    g = graph(edges)
    ours = set(g.adjustment_set())
    minimal = minimal_sets(brute_force_valid_sets(edges))
    for method in ("default", "minimal-adjustment"):
        theirs = set(dowhy_backdoor(g, method).get_backdoor_variables())
        assert g.is_valid_adjustment(theirs)
        if len(minimal) == 1 and method == "minimal-adjustment":
            assert ours == theirs == minimal[0]
    assert ours in minimal


def test_dowhy_agrees_on_non_identifiable_and_frontdoor():
    g = graph(LATENT, unobserved=["U"])
    assert dowhy_backdoor(g, "default").estimands["backdoor"] is None
    g = graph(FRONTDOOR, unobserved=["U"])
    estimand = dowhy_backdoor(g, "default")
    assert estimand.estimands["backdoor"] is None
    assert estimand.get_frontdoor_variables() == g.frontdoor_set()


def test_to_dowhy_checks_columns():
    g = graph(LATENT_BLOCKED, unobserved=["U"])
    with pytest.raises(GraphError, match="'X'"):
        g.to_dowhy(pd.DataFrame({"T": [0, 1], "Y": [0, 1]}))
    with pytest.raises(GraphError, match="marked unobserved"):
        g.to_dowhy(pd.DataFrame({"T": [0, 1], "Y": [0, 1], "X": [0, 1], "U": [0, 1]}))


# ----------------------------------------------------------------- output
def test_draw_png_and_svg(tmp_path):
    g = graph(FRONTDOOR, unobserved=["U"], M="mediator")
    png = g.draw(tmp_path / "g.png", title="front door")
    svg = g.draw(tmp_path / "g.svg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    text = svg.read_text()
    assert "<svg" in text and all(f">{n}<" in text or n in text for n in "TMYU")
    with pytest.raises(ValueError, match=".png"):
        g.draw(tmp_path / "g.txt")


def test_gml_round_trip(tmp_path):
    g = CausalGraph.recommendation("rec", "click", user=["activity"], text=["bio"],
                                   unobserved=["taste"])
    g.add_edge("rec", "dwell").add_edge("dwell", "click").add_node("dwell", "mediator")
    g.to_gml(tmp_path / "g.gml")
    for back in (CausalGraph.from_gml(tmp_path / "g.gml"), CausalGraph.from_gml(g.to_gml())):
        assert back.roles == g.roles
        assert set(back.graph.edges) == set(g.graph.edges)
        assert (back.treatment, back.outcome, back.unobserved) == ("rec", "click", ["taste"])
    with pytest.raises(GraphError, match="no treatment"):
        CausalGraph.from_gml('graph [ directed 1 node [ id 0 label "a" ] ]')


def test_estimator_uses_the_graphs_adjustment_set():
    from causalrec import estimate_item_effects
    from causalrec.datasets import simulate_log

    sim = simulate_log(n_items=10, n_rows=3000, text_confounding=0.0, seed=2)
    g = CausalGraph.recommendation("recommended", "clicked", context=["hour"],
                                   user=["user_activity", "tenure", "device"])
    g.add_edge("recommended", "watched").add_edge("watched", "clicked")   # a mediator
    cols = g.adjustment_columns(sim.data)
    assert cols == {"confounders": ["hour", "tenure", "user_activity"],
                    "categorical": ["device"], "text": []}
    via_graph = estimate_item_effects(sim.data, "item_id", "recommended", "clicked", graph=g)
    explicit = estimate_item_effects(sim.data, "item_id", "recommended", "clicked",
                                     confounders=cols["confounders"],
                                     categorical=cols["categorical"])
    pd.testing.assert_frame_equal(via_graph, explicit)
