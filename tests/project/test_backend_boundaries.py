"""The audit and the refutations run through public interfaces on either backend: the Spark
modules import the local ones and use no private member of them; the local packages reach
Spark only through one lazy backend choice (read from the source, no Spark needed)."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "causalrec"
SPARK_USERS = {"fairness": "spark/audit.py", "refute": "spark/refute.py", "uplift": "spark/uplift.py"}


def _tree(relative: str) -> ast.Module:
    return ast.parse((PACKAGE / relative).read_text(), filename=relative)


def _imported_module(node: ast.ImportFrom, relative: str) -> str:
    """The dotted module of ``from ... import`` in a file of causalrec (relative or not)."""
    if not node.level:
        return node.module or ""
    base = ["causalrec", *Path(relative).parent.parts]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


@pytest.mark.parametrize("local, spark_module", SPARK_USERS.items())
def test_spark_module_uses_no_private_member_of_the_local_package(local, spark_module):
    tree = _tree(spark_module)
    private = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and _imported_module(node, spark_module).startswith(
                f"causalrec.{local}"):
            private += [alias.name for alias in node.names if alias.name.startswith("_")]
        # attributes of other objects (the audit, the estimator): public ones only
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id == "self")):
            private.append(f"{ast.unparse(node.value)}.{node.attr}")
    assert private == []


@pytest.mark.parametrize("local", SPARK_USERS)
def test_local_package_reaches_spark_only_through_backend_for(local):
    """No import of causalrec.spark at all, lazy or not (no import circle): the backend is
    chosen from the input's type in one place, ``causalrec.backend.backend_for``."""
    at_module_level, in_functions = [], []
    for path in sorted((PACKAGE / local).glob("*.py")):
        relative = str(path.relative_to(PACKAGE))
        tree = _tree(relative)
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and _imported_module(node, relative).startswith(
                    "causalrec.spark"):
                (at_module_level if id(node) in top else in_functions).append(relative)
    assert at_module_level == [] and in_functions == [], at_module_level + in_functions
    assert "backend_for" in "".join(p.read_text() for p in (PACKAGE / local).glob("*.py"))
