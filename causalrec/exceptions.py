"""Errors and warnings that causalrec raises (besides ``SchemaError`` for bad logs)."""
from __future__ import annotations

__all__ = ["NotFittedError", "ConvergenceWarning", "DataWarning"]


class NotFittedError(RuntimeError, AttributeError):
    """A result was asked of an estimator before ``fit``; subclasses RuntimeError and
    AttributeError, as scikit-learn's does, so both kinds of handler catch it."""


class ConvergenceWarning(UserWarning):
    """A model stopped at ``max_iter`` before it converged; the message names the model and
    the items concerned."""


class DataWarning(UserWarning):
    """Something in the data was changed or dropped (a constant column, duplicated rows, ...)."""
