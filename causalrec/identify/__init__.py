"""Identification: causal graphs of a recommender, backdoor / front-door sets, DoWhy export
and drawing."""
from .graph import ROLES, CausalGraph, GraphError, NotIdentifiableError

__all__ = ["CausalGraph", "GraphError", "NotIdentifiableError", "ROLES"]
