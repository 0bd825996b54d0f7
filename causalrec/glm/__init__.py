"""The batched segment GLM: one engine for every nuisance model in causalrec.

``layout`` pads rows into blocks, ``linalg`` holds the batched inverses and the Schur
complement, ``solver`` the Newton solver in named phases (its data passes in ``passes``), ``reducer`` what couples segments
across solvers, and ``model`` the public door, ``SegmentGLM``.
"""
from .model import BlockedDesign, SegmentGLM, segment_moments
from .reducer import Reducer, ThreadReducer
from .passes import GLMFit

__all__ = ["SegmentGLM", "BlockedDesign", "segment_moments", "GLMFit", "Reducer", "ThreadReducer"]
