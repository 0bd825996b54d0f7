"""The ``causalrec`` command line: effects, report, audit, simulate and demo.

Every error prints one line ``causalrec: error: ...`` to stderr and exits with a documented
status (``causalrec --help``): 2 for usage and bad input (a wrong flag, a missing file or
column), 3 for a missing optional extra, 1 for anything else. Heavy modules (torch,
matplotlib) are imported only by the commands that need them.
"""
from __future__ import annotations

import os
import warnings

from .output import (INTERRUPTED, MISSING_EXTRA, RUNTIME_ERROR, USAGE_ERROR, Progress, fail,
                     show_warning)
from .parser import build_parser

__all__ = ["main", "build_parser", "exit_status"]


def main(argv=None) -> int:
    """Run the command line; returns the exit status (0 on success)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help / --version exit 0; usage errors were printed
        return int(exc.code or 0)
    progress = Progress(getattr(args, "quiet", False))
    try:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            return args.func(args, progress)
    except KeyboardInterrupt:
        fail("interrupted")
        return INTERRUPTED
    except Exception as exc:  # one line, whatever went wrong; CAUSALREC_DEBUG=1: traceback
        if os.environ.get("CAUSALREC_DEBUG"):
            raise
        status = exit_status(exc)
        fail(exc if status != RUNTIME_ERROR or isinstance(exc, RuntimeError)
             else f"unexpected {type(exc).__name__}: {exc}")
        return status


def exit_status(exc: BaseException) -> int:
    """The documented exit status of an error (see ``EXIT_CODES``)."""
    if isinstance(exc, ImportError):  # an optional extra is missing: the message names it
        return MISSING_EXTRA
    # SchemaError and GraphError are ValueErrors (UnicodeError too), a missing or unreadable
    # file an OSError, a wrongly typed column a TypeError: all fixed by changing the input
    if isinstance(exc, (ValueError, OSError, TypeError)):
        return USAGE_ERROR
    return RUNTIME_ERROR
