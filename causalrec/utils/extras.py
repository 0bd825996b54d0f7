"""Optional dependencies: features that need one import it through ``require``, so a missing
package is an ``ImportError`` naming the extra to install (the CLI exits with status 3)."""
from __future__ import annotations

from importlib import import_module

__all__ = ["DISTRIBUTION", "EXTRAS", "require"]

DISTRIBUTION = "causalrec-effects"  # the name on PyPI; the import name is causalrec
# top-level module -> the extra of pyproject.toml that installs it
EXTRAS = {"xgboost": "boost", "pyspark": "spark", "dowhy": "dowhy"}


def require(module: str, feature: str):
    """``module`` imported, or an ImportError saying that ``feature`` needs its extra."""
    try:
        return import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        raise ImportError(f"{feature} needs {top}: pip install "
                          f"'{DISTRIBUTION}[{EXTRAS[top]}]'") from exc
