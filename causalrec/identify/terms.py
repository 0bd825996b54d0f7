"""What every module of ``causalrec.identify`` shares: the node roles of a causal graph and
the errors (here, below the graph, so that drawing and export need not import it)."""
from __future__ import annotations

__all__ = ["ROLES", "FEATURE_ROLES", "GraphError", "NotIdentifiableError"]

ROLES = ("user", "item", "context", "text", "treatment", "outcome", "unobserved",
         "mediator", "other")
FEATURE_ROLES = ("user", "item", "context", "text")


class GraphError(ValueError):
    """The causal graph is malformed, or does not match the data."""


class NotIdentifiableError(GraphError):
    """No adjustment set of observed nodes blocks every backdoor path.

    ``path`` holds one open backdoor path (a list of nodes, treatment first) when one was found.
    """

    def __init__(self, message: str, path: list[str] | None = None):
        self.path = path
        super().__init__(message)
