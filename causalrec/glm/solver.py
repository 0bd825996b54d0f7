"""Newton solver for penalised GLMs of many segments at once, in named phases.

Two model structures share the solver:

* ``pooled=False`` (per segment): segment k has its own coefficients theta_k with an L2
  penalty (scikit-learn's ``C`` is ``1 / penalty``). Segments never interact: fitting a subset
  gives those segments exactly the fit they get in the whole run.
* ``pooled=True``: coefficients are gamma + theta_k, a shared part plus a segment deviation
  shrunk toward zero, so small segments borrow strength. The exact Newton step is solved
  through the Schur complement of the block-diagonal segment part.

A fit runs through these phases each iteration:

1. **set up** (once): centre / start values, warm starts, the first gradient + Hessian pass;
2. **direction**: factorise the segments whose Hessian is fresh, Newton directions and
   decrements;
3. **convergence check**: which segments are done, which need a fresh Hessian, whether this
   step is the last;
4. **line search**: step halving where the penalised loss went up; its last pass yields the
   next gradient (and Hessian, where wanted);
5. **advance**: converged segments leave the active set; the pooled *joint* phase (shared
   part and segments move together) ends once the shared part has converged, after which
   segments iterate on their own with the shared part fixed.

After ``HESSIAN_STEPS`` fresh Hessians a segment takes chord steps that reuse the last
Hessian's factors (a gradient pass per step, no Gram matrices, no inverses); a chord step that
shrinks the decrement by less than ``REFRESH_RATIO`` orders a fresh Hessian. Every quantity
that couples segments goes through the ``reducer`` (see ``reducer.py``); decisions of the
joint phase are taken from reduced numbers, all others per segment.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .layout import empty
from .linalg import robust_spd_inverse, segment_inverses, shared_hessian, symmetric_solve
# the solver calls _pass through this module's global (tests count the passes by patching it)
from .passes import GLMFit, _Blocks, _pass, _weighted_sums
from .reducer import Reducer

__all__ = ["fit_glm", "HESSIAN_STEPS", "REFRESH_RATIO", "CHORD_TOL"]

HESSIAN_STEPS = 2
REFRESH_RATIO = 0.15
CHORD_TOL = 1e-3
MAX_HALVINGS = 30


@dataclass
class _Settings:
    local_pen: torch.Tensor
    shared_pen: torch.Tensor
    pooled: bool
    max_iter: int
    tol: float
    rel_slack: float
    decrement_tol: float
    chord_tol: float
    reducer: Reducer
    n_seg_total: int = 0


@dataclass
class _State:
    """Iterates and per-segment bookkeeping; ``joint`` while a pooled fit's shared part moves."""

    local: torch.Tensor
    shared: torch.Tensor
    offset_seg: torch.Tensor  # Gaussian centring, added back to the intercepts at the end
    obj: torch.Tensor = None
    grad: torch.Tensor = None
    gram: torch.Tensor = None  # last pass's Gram matrices (rows valid where ``fresh``)
    fresh: torch.Tensor = None  # segments whose Gram matrix in ``gram`` is new
    active: torch.Tensor = None
    blocks: torch.Tensor = None  # the blocks this fit reads
    block_seg: torch.Tensor = None
    run: torch.Tensor = None     # blocks of the active segments
    converged: torch.Tensor = None
    n_iter: torch.Tensor = None
    n_hessians: torch.Tensor = None
    chord_before: torch.Tensor = None
    prev_decrement: torch.Tensor = None
    # the joint phase's flags are scalars, the same in every solver (one that holds no rows
    # must take the same decisions as the others)
    joint: bool = False
    joint_fresh: bool = True
    joint_chord_before: bool = False
    joint_hessians: int = 0
    prev_shared: float = float("inf")
    prev_worst: float = float("inf")
    inv: torch.Tensor = None    # segment inverses (n_seg, p, p), updated where fresh
    S_inv: torch.Tensor = None  # inverse Schur complement of the shared part (joint phase)
    acc: torch.Tensor = None    # one Gram accumulator for every pass


@dataclass
class _Direction:
    idx: torch.Tensor
    fresh: torch.Tensor       # per active segment
    d_local: torch.Tensor
    d_shared: torch.Tensor
    decrement: torch.Tensor
    shared_decrement: float
    joint_fresh: bool  # this iteration's factors are fresh (joint phase)


@dataclass
class _Decision:
    done: torch.Tensor        # per active segment
    last: torch.Tensor        # per active segment: the step to take is its last
    want_hessian: torch.Tensor
    shared_done: bool = False  # joint phase: one flag for all segments
    joint_last: bool = False
    joint_want: bool = False


def _penalised(cfg: _Settings, loss, local):  # per segment
    return loss + 0.5 * (cfg.local_pen * local ** 2).sum(1)


def _objective(cfg: _Settings, obj, shared):  # all segments, through the reducer
    return cfg.reducer.sum(obj.sum()) + 0.5 * (cfg.shared_pen * shared ** 2).sum()


# ---------------------------------------------------------------------- 1. set up
def _set_up(data: _Blocks, blocks, cfg: _Settings, init, first_gram=None) -> _State:
    Xb = data.X
    p, n_seg = Xb.shape[-1], data.n_seg
    opts = dict(dtype=Xb.dtype, device=Xb.device)
    red = cfg.reducer
    state = _State(torch.zeros(n_seg, p, **opts), torch.zeros(p, **opts), torch.zeros(n_seg, **opts))
    cfg.n_seg_total = int(red.sum(torch.tensor(float(n_seg), dtype=torch.float64)))
    # (a Gaussian fit centres what the linear predictor must explain: y - offset)
    w_seg, wy_seg = _weighted_sums(data, blocks, minus_offset=data.family == "gaussian")
    if data.family == "gaussian":
        # centre y (a pooled model's overall mean, a per-segment model's own): penalties
        # then shrink toward it; the offset is added back to the intercepts at the end
        if cfg.pooled:
            sums = red.sum(torch.stack([wy_seg.sum(), w_seg.sum()]))
            state.offset_seg[:] = sums[0] / sums[1].clamp(min=1e-12)
        else:
            state.offset_seg = wy_seg / w_seg.clamp(min=1e-12)
        data.y = data.y - state.offset_seg[data.block_seg].unsqueeze(1)
    else:
        # start each segment at its own smoothed rate (pooled: smoothed toward the overall
        # rate, which also starts the shared intercept): saves the Newton steps that would
        # only find the intercepts, and more on rare events
        if cfg.pooled:
            sums = red.sum(torch.stack([wy_seg.sum(), w_seg.sum()]))
            rate = (sums[0] / sums[1].clamp(min=1e-12)).clamp(1e-6, 1 - 1e-6)
            state.shared[0] = torch.logit(rate)
        else:
            rate = torch.tensor(0.5, **opts)
        start_logit = torch.logit((wy_seg + rate) / (w_seg + 1))
        if init is not None and cfg.pooled:  # (a Gaussian fit is one exact step from anywhere)
            state.shared = init.shared.to(**opts).clone()
        state.local[:, 0] = start_logit - state.shared[0]
        if init is not None:
            # per segment, keep the earlier fit where it beats the cold start: an intercept
            # that ran off toward -inf on data without events is a bad start on data with
            # some. The cold linear predictor is constant per segment: its loss needs no pass
            # (without an offset).
            warm = init.local.to(**opts)
            if data.offset is None:
                cold_loss = w_seg * torch.nn.functional.softplus(start_logit) - wy_seg * start_logit
            else:
                cold_loss = _pass(data, blocks, state.local + state.shared, need_hessian=False)[0]
            warm_loss = _pass(data, blocks, warm + state.shared, need_hessian=False)[0]
            better = _penalised(cfg, warm_loss, warm) < _penalised(cfg, cold_loss, state.local)
            state.local = torch.where(better.unsqueeze(1), warm, state.local)
    state.acc = empty((n_seg, p, p + 1), **opts)
    state.inv = empty((n_seg, p, p), **opts)
    if first_gram is not None and init is None and data.offset is None:
        # the start's linear predictor is constant in each segment, and so is its variance:
        # the first Hessian is the weighted Gram matrix times it, no pass over the rows
        loss, state.grad, _ = _pass(data, blocks, state.local + state.shared, need_hessian=False)
        if data.family == "logistic":
            mu = torch.sigmoid(state.local[:, 0] + state.shared[0])
            var = mu * (1 - mu)
        else:
            var = torch.ones(n_seg, **opts)
        state.gram = torch.mul(first_gram, var[:, None, None], out=state.acc[..., :p])
    else:
        loss, state.grad, state.gram = _pass(data, blocks, state.local + state.shared,
                                             need_hessian=True, out=state.acc)
    state.obj = _penalised(cfg, loss, state.local)
    state.joint = cfg.pooled
    flags = lambda value: torch.full((n_seg,), value, dtype=torch.bool, device=Xb.device)
    state.fresh, state.active, state.converged = flags(True), flags(True), flags(False)
    state.chord_before = flags(False)
    state.blocks, state.block_seg, state.run = blocks, data.block_seg, blocks
    state.n_iter = torch.zeros(n_seg, dtype=torch.long, device=Xb.device)
    state.n_hessians = torch.zeros_like(state.n_iter)
    state.prev_decrement = torch.full((n_seg,), float("inf"), **opts)
    return state


# ---------------------------------------------------------------------- 2. direction
def _direction(state: _State, cfg: _Settings) -> _Direction:
    idx = torch.nonzero(state.active).squeeze(1)
    fresh = state.fresh[idx]
    lp, sp = cfg.local_pen, cfg.shared_pen
    if state.joint_fresh if state.joint else bool(fresh.any()):
        renew = idx[fresh]
        # the fresh segments' inverses in place (no gathered copies of Gram matrices or inverses)
        _, inv_sum = segment_inverses(state.gram, lp, out=state.inv,
                                      index=None if len(renew) == len(state.inv) else renew)
        state.n_hessians[renew] += 1
        if state.joint:
            state.joint_hessians += 1  # (in the joint phase every segment is fresh or none is)
            S = shared_hessian(cfg.reducer.sum(inv_sum), cfg.n_seg_total, lp, sp)
            state.S_inv = robust_spd_inverse(S.unsqueeze(0))[0]
    subset = None if len(idx) == len(state.inv) else idx
    local, grad = state.local[idx], state.grad[idx]
    g_local = grad + lp * local
    u = symmetric_solve(state.inv, g_local, subset)  # A_k^-1 g_k
    d_shared = torch.zeros_like(state.shared)
    shared_decrement = 0.0
    if state.joint:
        # Eliminate the segment deviations (d_k = A_k^-1 (g_k - G_k d_shared)) and solve for
        # the shared part; with G_k = A_k - L the right-hand side needs only sums over segments.
        r = (sp * state.shared).to(torch.float64) + cfg.reducer.sum(
            (lp * (u - local)).sum(0, dtype=torch.float64))
        d_shared = (state.S_inv @ r).to(grad.dtype)
        d_local = u + symmetric_solve(state.inv, (lp * d_shared).expand_as(u), subset) - d_shared
        shared_grad = cfg.reducer.sum(state.grad.sum(0)) + sp * state.shared
        shared_decrement = float((shared_grad * d_shared).sum().abs())
    else:
        d_local = u
    # Newton decrement (predicted loss decrease) per segment
    decrement = (g_local * d_local).sum(1).abs()
    return _Direction(idx, fresh, d_local, d_shared, decrement, shared_decrement,
                      state.joint_fresh)


# ---------------------------------------------------------------------- 3. convergence check
def _check(state: _State, cfg: _Settings, d: _Direction, family: str) -> _Decision:
    """The decrement test ends the slow drift of an intercept toward -inf in an arm that never
    clicks (steps of ~1 that no longer change the loss or any prediction). A Newton step leaves
    about decrement^2 behind, a chord step about rate x decrement: chord steps stop once that
    is as small as what a Newton step below the tolerance leaves."""
    idx, dec = d.idx, d.decrement
    prev = state.prev_decrement[idx]
    step_size = d.d_local.abs().amax(1) if d.d_local.numel() else dec.new_zeros(len(idx))
    gaussian = family == "gaussian"
    if state.joint:  # one decision for all, from reduced numbers
        fresh, chord_before = d.joint_fresh, state.joint_chord_before
        local_stats = torch.stack([dec.max() if len(idx) else dec.new_zeros(()),
                                   step_size.max() if len(idx) else dec.new_zeros(())])
        worst_dec, worst_step = cfg.reducer.max(local_stats).tolist()
        worst = max(worst_dec, d.shared_decrement)
        full_size = max(worst_step, float(d.d_shared.abs().max()))
        if fresh:
            done = dec < cfg.decrement_tol
            shared_done = d.shared_decrement < cfg.decrement_tol
            refresh = False
        else:
            seg_rate = torch.where(prev > 0, dec / prev, 0.0).clamp(max=1.0) if chord_before else 1.0
            rate = (min(d.shared_decrement / state.prev_shared, 1.0)
                    if chord_before and state.prev_shared else 1.0)
            done = dec * seg_rate < cfg.chord_tol
            shared_done = d.shared_decrement * rate < cfg.chord_tol
            refresh = worst > REFRESH_RATIO * state.prev_worst
        state.prev_shared, state.prev_worst = d.shared_decrement, worst
        not_done = cfg.reducer.max(torch.tensor(float(not bool(done.all()))))
        last = gaussian or (fresh and full_size < cfg.tol) or (float(not_done) == 0 and shared_done)
        want = (not last) and (state.joint_hessians < HESSIAN_STEPS or refresh)
        full = lambda value: torch.full((len(idx),), bool(value), device=dec.device)
        return _Decision(done, full(last), full(want), shared_done, last, want)
    fresh = d.fresh
    seg_rate = torch.where(state.chord_before[idx] & (prev > 0), (dec / prev).clamp(max=1.0), 1.0)
    done = torch.where(fresh, dec < cfg.decrement_tol, dec * seg_rate < cfg.chord_tol)
    refresh = ~fresh & (dec > REFRESH_RATIO * prev)
    small = fresh & (step_size < cfg.tol)  # what a chord step leaves is not that small
    last = done | small | gaussian
    want = ~last & ((state.n_hessians[idx] < HESSIAN_STEPS) | refresh)
    return _Decision(done, last, want)


# ---------------------------------------------------------------------- 4. line search
def _line_search(data: _Blocks, blocks, state: _State, cfg: _Settings, d: _Direction,
                 decision: _Decision):
    """Halve the step where the penalised loss went up (the whole step in the joint phase,
    each segment's own otherwise). Its last pass gives the next gradient and, where wanted,
    the Hessian; a step known to be the last needs losses only."""
    idx = d.idx
    step = d.decrement.new_ones(1 if state.joint else len(idx))
    want = decision.want_hessian.clone()
    joint_want = decision.joint_want
    for _ in range(MAX_HALVINGS):
        new_local = state.local.clone()
        new_local[idx] -= step.view(-1, 1) * d.d_local
        new_shared = state.shared - step[0] * d.d_shared if state.joint else state.shared
        if data.family == "gaussian":  # quadratic loss: the Newton step is exact
            return new_local, new_shared, step, None, want
        need_hessian = joint_want if state.joint else bool(want.any())
        loss, grad, gram = _pass(data, state.run, new_local + new_shared,
                                 need_hessian=need_hessian, out=state.acc)
        new_obj = _penalised(cfg, loss, new_local)
        if state.joint:
            before, after = _objective(cfg, state.obj, state.shared), _objective(cfg, new_obj, new_shared)
        else:
            before, after = state.obj[idx], new_obj[idx]
        worse = after > before + cfg.rel_slack * before.abs().clamp(min=1.0)
        if not bool(worse.any()):
            break
        step = torch.where(worse, step / 2, step)
        # a step that went uphill: the Hessian no longer fits, the next pass renews it
        want |= worse & ~decision.last
        joint_want = joint_want or not decision.joint_last
    state.grad, state.gram = grad, gram
    if state.joint:
        state.joint_fresh = joint_want
    return new_local, new_shared, step, new_obj, want


def _active_blocks(state: _State) -> torch.Tensor:
    return state.blocks[state.active[state.block_seg[state.blocks]]]


# ---------------------------------------------------------------------- 5. advance
def _advance(state: _State, cfg: _Settings, d: _Direction, decision: _Decision, it: int,
             new_local, new_shared, step, new_obj, want) -> bool:
    """Take the step; returns True when every segment of this solver has stopped."""
    idx = d.idx
    moved = (step.view(-1, 1) * d.d_local).abs().amax(1) if len(idx) else step.new_zeros(0)
    state.local, state.shared = new_local, new_shared
    state.n_iter[idx] = it
    if new_obj is not None:
        state.obj[idx] = new_obj[idx]
    state.prev_decrement[idx] = d.decrement
    state.chord_before[idx] = ~d.fresh
    state.fresh[idx] = want
    if state.joint:
        local_size = moved.max() if len(idx) else moved.new_zeros(())
        size = float(cfg.reducer.max(torch.stack([local_size, (step[0] * d.d_shared).abs().max()])).max())
        fresh = d.joint_fresh
        state.joint_chord_before = not fresh
        if decision.joint_last or (fresh and size < cfg.tol):
            state.converged[idx] = True
            state.active[idx] = False
            return True
        if decision.shared_done:  # segments go on alone, the shared part fixed
            state.joint = False
            state.converged[idx] = decision.done
            state.active[idx] = ~decision.done
            state.run = _active_blocks(state)
        return False
    stop = decision.last | (d.fresh & (moved < cfg.tol))
    if bool(stop.any()):
        state.converged[idx[stop]] = True
        state.active[idx[stop]] = False
        state.run = _active_blocks(state)
    return not bool(state.active.any())


def fit_glm(Xb, yb, wb, blocks, block_seg, n_seg, *, family="logistic", pooled=True,
            local_penalty, shared_penalty=None, max_iter=50, tol=1e-6,
            init: GLMFit | None = None, offset=None, reducer: Reducer | None = None,
            first_gram=None) -> GLMFit:
    """Penalised GLM for all segments at once (see the module docstring for the phases).

    Xb (n_blocks, B, p) holds an intercept column first; wb is a row weight (0 on padding);
    ``offset`` (n_blocks, B) is added to the linear predictor; only ``blocks`` enter the fit;
    ``block_seg`` maps every block to its segment. ``local_penalty`` / ``shared_penalty`` are
    (p,) ridge penalties on theta_k / gamma. ``init`` starts Newton from an earlier fit of the
    same model (e.g. on another fold). ``reducer`` sums what couples segments across solvers
    that each hold some of them (default: this solver holds all). ``first_gram``: per
    segment, X' W X over ``blocks`` (``passes.block_grams``); a cold start (no ``init``, no
    offset) has a linear predictor constant in each segment, so its Hessian is this times
    the start's variance, and the set-up makes a gradient pass instead of a Gram pass.
    """
    p = Xb.shape[-1]
    opts = dict(dtype=Xb.dtype, device=Xb.device)
    eps = float(torch.finfo(Xb.dtype).eps)
    decrement_tol = 3 * eps ** 0.5  # 1e-3 nats in float32
    cfg = _Settings(
        local_pen=torch.as_tensor(local_penalty, **opts).expand(p),
        shared_pen=torch.as_tensor(0.0 if shared_penalty is None else shared_penalty, **opts).expand(p),
        pooled=pooled, max_iter=max_iter,
        # float32 steps and sums never get below their rounding noise: compare within it
        tol=max(tol, 100 * eps), rel_slack=100 * eps, decrement_tol=decrement_tol,
        chord_tol=CHORD_TOL * decrement_tol ** 2, reducer=reducer or Reducer())
    data = _Blocks(Xb, yb, wb, offset, block_seg, n_seg, family)
    state = _set_up(data, blocks, cfg, init, first_gram)
    for it in range(1, max_iter + 1):
        d = _direction(state, cfg)
        decision = _check(state, cfg, d, family)
        outcome = _line_search(data, blocks, state, cfg, d, decision)
        if _advance(state, cfg, d, decision, it, *outcome):
            break
    shared, local = state.shared.clone(), state.local
    if pooled:
        shared[0] += state.offset_seg[0] if n_seg else 0.0
    else:
        local = local.clone()
        local[:, 0] += state.offset_seg
    n_iter = int(cfg.reducer.max(state.n_iter.max().double() if n_seg else torch.zeros((), dtype=torch.float64)))
    return GLMFit(shared, local, family, n_iter, state.converged.clone())
