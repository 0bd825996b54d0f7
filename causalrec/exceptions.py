"""Errors and warnings that causalrec raises (besides ``SchemaError`` for bad logs)."""
from __future__ import annotations

from sklearn.exceptions import NotFittedError as _SklearnNotFittedError

__all__ = ["NotFittedError", "ConvergenceWarning", "DataWarning"]


class NotFittedError(_SklearnNotFittedError, RuntimeError):
    """A result was asked of an estimator before ``fit``. It is scikit-learn's
    ``NotFittedError`` (so a ValueError and an AttributeError, and sklearn's
    ``check_is_fitted`` handlers catch it), and still a RuntimeError as it was before."""


class ConvergenceWarning(UserWarning):
    """A model stopped at ``max_iter`` before it converged; the message names the model and
    the items concerned."""


class DataWarning(UserWarning):
    """Something in the data was changed or dropped (a constant column, duplicated rows, ...)."""
