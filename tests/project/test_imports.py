"""The import structure of causalrec: layers, no circles.

Every module's imports are read with ``ast``, those inside functions (lazy imports) included:
a lazy import still ties the two modules together. Each package (or top-level module) of
causalrec sits in one layer, and a module imports only from its own package or from a lower
layer. Lowest first:

====  ==========================================  ============================================
layer packages                                    what lives there
====  ==========================================  ============================================
0     exceptions, utils                           errors; frame checks, hashing, I/O, HTML kit
1     base, schema, summary, inference, backend   estimator contract, the log and its roles,
                                                  the summary type, intervals and p-values,
                                                  the one "is this a Spark frame?" door
2     glm, confounders, identify, rank, datasets  the GLM engine; text confounders; causal
                                                  graphs; empirical-Bayes ranking; data
3     nuisance                                    flexible nuisance learners (on the glm)
4     estimate                                    item and net effects (design, folds, fits,
                                                  scores, estimator, one-call functions)
5     refute, bandit, uplift                      built on item effects
6     reporting                                   the effect report (reads refute, rank, ...)
7     fairness                                    the audit (its page comes from reporting)
8     spark                                       the distributed path of all of the above
9     causalrec (the package's root)              ``__version__``, the lazy public names
10    cli                                         the command line
11    __main__                                    ``python -m causalrec`` (runs the cli)
====  ==========================================  ============================================

Packages in one layer do not import each other. One exception, by design: ``causalrec.backend``
(``backend_for``) is the door from the lower layers to the Spark path, so its lazy imports of
``causalrec.spark`` modules are allowed (``DOOR``) and no other module below spark may import it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

import causalrec

ROOT = Path(causalrec.__file__).parent

# a new package or top-level module must be placed here (test_every_package_has_a_layer)
LAYERS = (
    ("exceptions", "utils"),
    ("base", "schema", "summary", "inference", "backend"),
    ("glm", "confounders", "identify", "rank", "datasets"),
    ("nuisance",),
    ("estimate",),
    ("refute", "bandit", "uplift"),
    ("reporting",),
    ("fairness",),
    ("spark",),
    ("causalrec",),
    ("cli",),
    ("__main__",),
)
LAYER_OF = {package: level for level, packages in enumerate(LAYERS) for package in packages}

# The one door up to the Spark path: ``backend_for`` imports the Spark counterpart of a local
# implementation lazily, only when the data is a Spark frame (the Spark modules import the
# local ones back, so any other such import would close a circle).
DOOR = "causalrec.backend"
ALLOWED_EDGES = {
    (DOOR, "causalrec.spark.driver"),
    (DOOR, "causalrec.spark.audit"),
    (DOOR, "causalrec.spark.refute"),
    (DOOR, "causalrec.spark.uplift"),
}


def _module_name(path: Path) -> str:
    parts = ("causalrec",) + path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(module: str, is_package: bool, node, modules) -> list[str]:
    """The causalrec modules an import statement (or ``import_module("...")`` call) loads."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:  # relative: up from the importing module's package
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[:len(base) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        # "from package import name" loads package.name when that is a module
        names = [f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target
                 for alias in node.names]
    elif (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None))
          == "import_module" and node.args and isinstance(node.args[0], ast.Constant)
          and isinstance(node.args[0].value, str)):
        names = [node.args[0].value]
    else:
        return []
    found = []
    for name in names:
        while name not in modules and "." in name:  # "causalrec.x.function" -> causalrec.x
            name = name.rsplit(".", 1)[0]
        if name in modules and name != module:
            found.append(name)
    return found


def _read_graph() -> nx.DiGraph:
    """Module -> imported module, for every causalrec module (each edge keeps a line number)."""
    paths = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(paths)
    for module, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            for target in _imported(module, path.name == "__init__.py", node, paths):
                graph.add_edge(module, target, line=node.lineno)
    return graph


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "causalrec"


@pytest.fixture(scope="module")
def graph() -> nx.DiGraph:
    return _read_graph()


@pytest.fixture(scope="module")
def checked(graph) -> nx.DiGraph:
    """The import graph without the allowed edges."""
    out = graph.copy()
    out.remove_edges_from(ALLOWED_EDGES)
    return out


def _where(graph, a, b) -> str:
    return f"{a} -> {b} (line {graph.edges[a, b]['line']})"


def test_the_reader_sees_relative_lazy_and_dynamic_imports():
    modules = {"causalrec", "causalrec.a", "causalrec.a.b", "causalrec.c"}
    source = ("from . import b\nfrom ..c import f\n"
              "def g():\n    from .b import h\n    import causalrec.c\n"
              "    return import_module('causalrec.a.b.x')\n")
    seen = {t for node in ast.walk(ast.parse(source))
            for t in _imported("causalrec.a", True, node, modules)}
    assert seen == {"causalrec.a.b", "causalrec.c"}


def test_every_package_has_a_layer(graph):
    unplaced = sorted({_package(m) for m in graph} - set(LAYER_OF))
    assert not unplaced, f"place these packages in LAYERS (tests/project/test_imports.py): {unplaced}"


def test_no_import_from_a_lower_layer_to_a_higher_one(checked):
    wrong = [_where(checked, a, b) + f": layer {LAYER_OF[_package(a)]} imports layer "
             f"{LAYER_OF[_package(b)]}" for a, b in checked.edges
             if _package(a) != _package(b) and LAYER_OF[_package(a)] <= LAYER_OF[_package(b)]]
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_no_module_cycles(checked):
    cycles = [sorted(c) for c in nx.strongly_connected_components(checked) if len(c) > 1]
    details = ["; ".join(_where(checked, a, b) for a, b, *_ in nx.find_cycle(checked.subgraph(c)))
               for c in cycles]
    assert not cycles, "modules that import each other:\n" + "\n".join(details)


def test_no_package_cycles(checked):
    packages = nx.DiGraph((_package(a), _package(b)) for a, b in checked.edges
                          if _package(a) != _package(b))
    cycles = [sorted(c) for c in nx.strongly_connected_components(packages) if len(c) > 1]
    assert not cycles, f"packages that import each other: {cycles}"


def test_allowed_edges_still_exist(graph):
    gone = sorted(edge for edge in ALLOWED_EDGES if not graph.has_edge(*edge))
    assert not gone, f"these imports are gone: delete them from ALLOWED_EDGES: {gone}"


def test_only_the_door_reaches_spark_from_below(graph):
    below = [_where(graph, a, b) for a, b in graph.edges
             if _package(b) == "spark" and LAYER_OF[_package(a)] < LAYER_OF["spark"] and a != DOOR]
    assert not below, "use causalrec.backend.backend_for instead:\n" + "\n".join(below)
