"""'Did you mean ...?' for a misspelt name (a column, a command-line option or choice)."""
from __future__ import annotations

import difflib

__all__ = ["did_you_mean"]


def did_you_mean(name, candidates, n: int = 3) -> str:
    """``"; did you mean 'x'?"`` (or ``'x' or 'y'``) for the candidates close to ``name``
    (difflib's ratio >= 0.6, case ignored), else ``""``; ready to end an error message."""
    named = {str(c).lower(): str(c) for c in candidates}
    close = difflib.get_close_matches(str(name).lower(), list(named), n=n, cutoff=0.6)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(named[c]) for c in close) + "?"
