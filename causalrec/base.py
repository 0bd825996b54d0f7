"""The contract every public estimator follows (scikit-learn's, made small).

* constructor arguments are keyword-only and stored as given;
* parameters are declared once, in ``_parameter_constraints``, and checked in one place at
  ``fit`` (``_validate_params``): a bad value raises ``ValueError`` naming it;
* ``get_params`` / ``set_params``; ``fit(...)`` returns self; learned attributes end in ``_``;
* results asked of an unfitted estimator raise ``NotFittedError``;
* ``summary()`` returns a ``causalrec.reporting.Summary`` (text by ``str``, HTML in notebooks).
"""
from __future__ import annotations

import inspect

from .exceptions import NotFittedError
from .utils.validation import validate_params

__all__ = ["BaseEstimator"]


class BaseEstimator:
    _parameter_constraints: dict = {}

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [p.name for p in signature.parameters.values()
                if p.name != "self" and p.kind == p.KEYWORD_ONLY]

    def get_params(self) -> dict:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params) -> "BaseEstimator":
        valid = set(self._param_names())
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"{type(self).__name__} has no parameter {name!r}; "
                                 f"its parameters are {sorted(valid)}")
            setattr(self, name, value)
        return self

    def clone(self) -> "BaseEstimator":
        """A new, unfitted estimator with the same parameters."""
        return type(self)(**self.get_params())

    def _validate_params(self) -> None:
        validate_params(self.get_params(), self._parameter_constraints, type(self).__name__)

    def _check_is_fitted(self, attribute: str) -> None:
        if not hasattr(self, attribute):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit first")

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        changed = [f"{k}={v!r}" for k, v in self.get_params().items()
                   if not (v is defaults.get(k) or (type(v) is type(defaults.get(k)) and v == defaults.get(k)))]
        return f"{type(self).__name__}({', '.join(changed)})"
