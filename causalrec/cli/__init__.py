"""The ``causalrec`` command line: effects, report, audit, simulate and demo.

Errors a user can fix (a missing file, a wrong column, a bad flag) print one line
``causalrec: error: ...`` to stderr and exit non-zero (2 for usage, 1 otherwise). Heavy
modules (torch, matplotlib) are imported only by the commands that need them.
"""
from __future__ import annotations

import os
import warnings

from .output import RUNTIME_ERROR, Progress, fail, show_warning
from .parser import build_parser

__all__ = ["main", "build_parser"]


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
    except (ValueError, OSError, RuntimeError, TypeError) as exc:
        # SchemaError and GraphError are ValueErrors (UnicodeError too), FileNotFoundError an
        # OSError, a bad torch device a RuntimeError, a wrongly typed column a TypeError.
        # CAUSALREC_DEBUG=1 shows the traceback instead.
        if os.environ.get("CAUSALREC_DEBUG"):
            raise
        fail(exc)
        return RUNTIME_ERROR
    except KeyboardInterrupt:
        fail("interrupted")
        return 130
