"""Where the time of one ``estimate_item_effects`` call goes: wall seconds per phase.

``phase_timer()`` wraps the package's phase functions (wherever a module imported them by
name) for the duration of a ``with`` block. Each wrapped call is bracketed by
``torch.cuda.synchronize()`` when CUDA is in use, so queued device work is charged to the
phase that queued it. Times are exclusive: a phase nested in another (the layout inside the
nuisance fits) is not counted twice; "nuisance fits (device)" is what remains of the fits
outside the GLM solver.
"""
from __future__ import annotations

import functools
import sys
import time
from contextlib import contextmanager

import torch

# phase -> (module, attribute) of the functions charged to it
PHASES = {
    "validation": [("causalrec.schema", "InteractionLog.__init__")],
    "design spec": [("causalrec.estimate.design", "DesignSpec.from_log"),
                    ("causalrec.estimate.design", "DesignSpec.transform")],
    "fold hashing": [("causalrec.estimate.folds", "assign_folds"),
                     ("causalrec.estimate.folds", "FoldAssigner.__call__")],
    "layout": [("causalrec.glm.layout", "make_layout"), ("causalrec.glm.layout", "pad_design"),
               ("causalrec.glm.layout", "pad"), ("causalrec.glm.layout", "unpad")],
    "host-device transfers": [("causalrec.glm.layout", "read_only_tensor")],
    "nuisance fits (device)": [("causalrec.estimate.nuisance", "cross_fit")],
    # the solver's passes and factorisations: the compute floor of the fits (nested in the
    # nuisance fits, whose phase keeps the rest: predictions, blocked outcomes, bookkeeping);
    # with the arms' X'X that give cold starts their first Hessian (``block_grams``)
    "GLM solver": [("causalrec.glm.solver", "fit_glm"), ("causalrec.glm.passes", "block_grams")],
    "effects table": [("causalrec.estimate.scores", "effects_table")],
}


def _sync():
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _resolve(module: str, path: str):
    owner = sys.modules.get(module) or __import__(module, fromlist=["_"])
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    return owner, name


@contextmanager
def phase_timer(clock=time.perf_counter):
    """Yields a dict phase -> seconds, filled in while the block runs. ``clock``:
    ``time.process_time`` charges CPU seconds (steadier than wall time on a shared machine
    when the process runs one thread)."""
    import causalrec  # noqa: F401  (every module imported, so every by-name copy is found)
    import causalrec.estimate.api, causalrec.estimate.estimator, causalrec.glm.model  # noqa

    seconds = {phase: 0.0 for phase in PHASES}
    stack = []  # [phase, start, time spent in nested phases]
    patches = []

    def wrap(func, phase):
        @functools.wraps(func)
        def timed(*args, **kwargs):
            _sync()
            stack.append([phase, clock(), 0.0])
            try:
                return func(*args, **kwargs)
            finally:
                _sync()
                name, start, nested = stack.pop()
                spent = clock() - start
                seconds[name] += spent - nested
                if stack:
                    stack[-1][2] += spent
        return timed

    for phase, targets in PHASES.items():
        for module, path in targets:
            try:  # (a name the code under test lacks, e.g. an older version: skipped)
                owner, name = _resolve(module, path)
                original = getattr(owner, name)
            except AttributeError:
                continue
            timed = wrap(original, phase)
            patches.append((owner, name, original))
            setattr(owner, name, timed)
            if "." not in path:  # the copies other modules imported by name
                for other in list(sys.modules.values()):
                    if (getattr(other, "__name__", "").startswith("causalrec")
                            and getattr(other, name, None) is original):
                        patches.append((other, name, original))
                        setattr(other, name, timed)
    try:
        yield seconds
    finally:
        for owner, name, original in reversed(patches):
            setattr(owner, name, original)
