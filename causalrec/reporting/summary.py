"""``Summary`` under its reporting name: it lives in ``causalrec.summary``, beside the estimator
contract, so that the estimators below ``reporting`` can return one."""
from ..summary import Summary

__all__ = ["Summary"]
