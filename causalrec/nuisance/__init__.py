"""Flexible (boosted, factorised or user-supplied) nuisance models, cross-fitted for all items
at once."""
from .boosted import BoostedLearner
from .crossfit import FlexibleNuisance, NuisanceResult, cross_fit_nuisances, resolve_nuisance
from .factorised import FactorisedLearner
from .select import calibration_table
from .sklearn_adapter import SklearnLearner

__all__ = ["BoostedLearner", "FactorisedLearner", "FlexibleNuisance", "NuisanceResult",
           "SklearnLearner", "calibration_table", "cross_fit_nuisances", "resolve_nuisance"]
