"""The contract every public estimator follows (scikit-learn's, made small).

* constructor arguments are keyword-only and stored as given;
* parameters are declared once, in ``_parameter_constraints``, and checked in one place at
  ``fit`` (``_validate_params``): a bad value raises ``ValueError`` naming it;
* ``get_params(deep=True)`` / ``set_params`` with scikit-learn's ``<param>__<nested>`` keys,
  so ``sklearn.base.clone`` and grid searches work; ``fit(...)`` returns self; learned
  attributes end in ``_``;
* results asked of an unfitted estimator raise ``NotFittedError`` (scikit-learn's subclass);
* ``summary()`` returns a ``causalrec.summary.Summary`` (text by ``str``, HTML in notebooks).
"""
from __future__ import annotations

import functools
import inspect

from .exceptions import NotFittedError
from .utils.validation import validate_params

__all__ = ["BaseEstimator"]


@functools.cache
def _keyword_names(init) -> tuple[str, ...]:
    """The keyword-only parameters of a constructor (cached: ``inspect.signature`` costs
    0.1 ms, and every small GLM fit validates its parameters)."""
    return tuple(p.name for p in inspect.signature(init).parameters.values()
                 if p.name != "self" and p.kind == p.KEYWORD_ONLY)


class BaseEstimator:
    _parameter_constraints: dict = {}

    @classmethod
    def _param_names(cls) -> list[str]:
        return list(_keyword_names(cls.__init__))

    def _shallow_params(self) -> dict:
        """Parameter name -> value as given (a hook for estimators that take options on
        behalf of an inner estimator)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def _settable_names(self) -> set[str]:
        return set(self._param_names())

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's parameters; with ``deep``, also those of parameters that are
        estimators themselves, as ``<param>__<name>`` (scikit-learn's convention)."""
        params = self._shallow_params()
        if deep:
            for name, value in list(params.items()):
                if hasattr(value, "get_params") and not isinstance(value, type):
                    params.update((f"{name}__{key}", inner)
                                  for key, inner in value.get_params(deep=True).items())
        return params

    def set_params(self, **params) -> "BaseEstimator":
        """Set parameters (``<param>__<name>`` sets a nested estimator's); returns self."""
        valid = self._settable_names()
        nested: dict[str, dict] = {}
        for key, value in params.items():
            name, _, inner = key.partition("__")
            if name not in valid:
                raise ValueError(f"{type(self).__name__} has no parameter {name!r}; "
                                 f"its parameters are {sorted(valid)}")
            if inner:
                nested.setdefault(name, {})[inner] = value
            else:
                self._set_param(name, value)
        for name, inner_params in nested.items():  # after plain ones: a new inner estimator first
            self._shallow_params()[name].set_params(**inner_params)
        return self

    def _set_param(self, name: str, value) -> None:
        setattr(self, name, value)

    def clone(self) -> "BaseEstimator":
        """A new, unfitted estimator with the same parameters (``sklearn.base.clone`` also
        works and clones nested estimators)."""
        return type(self)(**self.get_params(deep=False))

    def _validate_params(self) -> None:
        validate_params(self._shallow_params(), self._parameter_constraints,
                        type(self).__name__)

    def _check_is_fitted(self, attribute: str) -> None:
        if not hasattr(self, attribute):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit first")

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        changed = [f"{k}={v!r}" for k, v in self.get_params(deep=False).items()
                   if not (v is defaults.get(k) or (type(v) is type(defaults.get(k)) and v == defaults.get(k)))]
        return f"{type(self).__name__}({', '.join(changed)})"
