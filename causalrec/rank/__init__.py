"""Rank items by shrunk causal effects and compare recommendation policies.

With thousands of items, many of them small, the largest raw estimates are mostly noise (the
winner's curse). Empirical Bayes pools all items: a prior for the true effects is fitted from
every item's estimate and standard error (``EmpiricalBayesPrior``; with item covariates,
``CovariatePrior``), and each item is summarised by its posterior.
"""
from .covariates import CovariatePrior, covariate_matrix
from .prior import EmpiricalBayesPrior
from .ranking import compare_policies, rank_items

__all__ = ["EmpiricalBayesPrior", "CovariatePrior", "covariate_matrix", "rank_items",
           "compare_policies"]
