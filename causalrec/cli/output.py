"""How the command line talks: progress lines, one-line warnings and errors on stderr."""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager

__all__ = ["PROG", "OK", "RUNTIME_ERROR", "USAGE_ERROR", "MISSING_EXTRA", "INTERRUPTED",
           "Progress", "show_warning", "fail"]

PROG = "causalrec"
# exit statuses, documented in --help and the README
OK, RUNTIME_ERROR, USAGE_ERROR, MISSING_EXTRA, INTERRUPTED = 0, 1, 2, 3, 130


class Progress:
    """Progress lines on stderr; silent with --quiet."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    def say(self, message: str) -> None:
        if not self.quiet:
            print(f"{PROG}: {message}", file=sys.stderr, flush=True)

    @contextmanager
    def step(self, message: str):
        self.say(f"{message} ...")
        start = time.perf_counter()
        yield
        self.say(f"{message}: done in {time.perf_counter() - start:.1f} s")


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings about the data as one line each, like errors (no source lines)."""
    print(f"{PROG}: warning: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


def fail(message: str) -> None:
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
