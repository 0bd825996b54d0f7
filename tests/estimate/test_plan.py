"""The fit's skeleton (plan -> shard function -> finish) without Spark: a Spark task's shard
function run on pandas shards in threads, coupled by the engine's ThreadReducer, equals the
local estimator; the penalty grid in lockstep gives the same numbers with fewer reductions."""
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyspark")  # causalrec.spark's modules (the task code imports no pyspark)

import causalrec as cr
from causalrec.estimate.shardfit import fit_shard
from causalrec.glm.reducer import OpReducer, ThreadReducer
from causalrec.spark.backend import _block_size
from causalrec.spark.shard import CODE, ROW_ID, SHARD, ShardJob, fit_shard_rows

ROLES = dict(item="item_id", treatment="recommended", outcome="clicked",
             confounders=["user_activity", "tenure", "hour"], categorical=["device"])


class CountingReducer(OpReducer):
    """The identity reducer, counting its calls (one round each on Spark without barrier)."""

    def __init__(self):
        self.n_calls, self.ops = 0, []

    def _reduce(self, value, op):
        self.n_calls += 1
        self.ops.append(op)
        return value


@pytest.fixture(scope="module")
def log():
    # 1,200 rows, 8 items, 7 design columns: few rows per column, so the pooled fit tunes
    # its shared-slope penalty (four fits per split)
    df = cr.datasets.simulate_log(n_items=8, n_rows=1200, seed=5).data
    return cr.InteractionLog(df, **ROLES)


def _plan_and_local(log, **options):
    est = cr.ItemEffectEstimator(dtype="float64", **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(log)
    return est.plan_, est


def _shard_frames(log, plan, n_shards):
    """The log's fitted rows split into shards of whole items, as the Spark backend's tasks
    receive them (row id, item code, shard id columns)."""
    df = log.data.assign(**{ROW_ID: np.arange(len(log.data))})
    codes = pd.Series(np.arange(plan.n_items), index=plan.facts.segments["item_id"])
    df[CODE] = codes.loc[df["item_id"]].to_numpy()
    used = np.flatnonzero(plan.facts.use)
    shard_of_item = np.full(plan.n_items, -1)
    shard_of_item[used] = np.arange(len(used)) % n_shards
    df[SHARD] = shard_of_item[df[CODE]]
    shard_items = [np.flatnonzero(shard_of_item == s) for s in range(n_shards)]
    frames = [df[df[SHARD] == s].sample(frac=1, random_state=s) for s in range(n_shards)]
    return frames, shard_items


def _run_shards(log, plan, n_shards, lockstep):
    frames, shard_items = _shard_frames(log, plan, n_shards)
    job = ShardJob(plan=plan, fit=fit_shard, treatment=log.treatment, outcome=log.outcome,
                   propensity=log.propensity, content=log.item_columns + log.confounders
                   + log.categorical, folds=None, extra=[], shard_items=shard_items,
                   block_size=_block_size(plan.facts.arm_rows[plan.facts.use],
                                          plan.params["n_folds"]),
                   row_outputs=False, lockstep=lockstep)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = ThreadReducer(n_shards).run(lambda pdf, red: fit_shard_rows(pdf, job, red), frames)
    return [pickle.loads(o["payload"].iloc[0]) for o in out]


@pytest.mark.parametrize("nuisance", ["pooled", "per_item"])
def test_shards_in_threads_equal_the_local_fit(log, nuisance):
    """Two shards of whole items, each fitted by the Spark task's function on its own rows
    (shuffled: the task orders them), coupled by a reducer, finished by the plan: the local
    table (float64: summation order only, 1e-8). per_item: two splits (the repeated-split
    loop); pooled: one (its tuning fits per split are the cost). The log is small: both tune
    their ridge (pooled its shared slopes', per_item each item's) through the reducer."""
    repeats = 2 if nuisance == "per_item" else 1
    plan, local = _plan_and_local(log, nuisance=nuisance, n_repeats=repeats)
    assert plan.tune_columns is not None
    effects = plan.finish(_run_shards(log, plan, 2, lockstep=False))
    assert plan.all_converged(effects) == local.converged_
    pd.testing.assert_frame_equal(effects, local.effects_, check_exact=False, rtol=1e-8)


@pytest.fixture(scope="module")
def big_log():
    # 6,000 rows, 6 items: many rows per column, no penalty grid
    df = cr.datasets.simulate_log(n_items=6, n_rows=6000, seed=7).data
    return cr.InteractionLog(df, **ROLES)


@pytest.mark.parametrize("which", ["log", "big_log"])
def test_independent_fits_in_lockstep_same_numbers_fewer_reductions(request, which):
    """Independent fits with their reductions sent together: on the small log the penalty
    grid's four fits (each fold's three models side by side within each), on the large log
    (no grid) each fold's propensity and two outcome models. Bitwise the same shard results
    with at most half the reductions (sequential: every fit's; lockstep: one outer call per
    step of the longest fit, sums and maxima together)."""
    log = request.getfixturevalue(which)
    plan, _ = _plan_and_local(log, n_repeats=1)
    assert (plan.tune_columns is None) == (which == "big_log")
    local = _local_data(log, plan)
    parts, calls = {}, {}
    for lockstep in (False, True):
        reducer = CountingReducer()
        parts[lockstep] = fit_shard(plan, local, reducer, lockstep=lockstep)
        calls[lockstep], ops = reducer.n_calls, reducer.ops
    pd.testing.assert_frame_equal(parts[True].table, parts[False].table, check_exact=True)
    for name in ("psi", "e", "mu0", "mu1"):
        np.testing.assert_array_equal(parts[True].rows[name], parts[False].rows[name])
    assert parts[True].shared_penalty == parts[False].shared_penalty
    assert 0 < calls[True] < calls[False] / 2
    # a batch where some fits sum and others take a maximum is one reduction
    assert any(op.startswith("sum|max:") for op in ops)


def _local_data(log, plan):
    from causalrec.estimate.local import LocalBackend
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LocalBackend(log).shard_data(plan)


def test_pooled_shards_with_lockstep_equal_without(log):
    """Shards coupled by a reducer, each running the grid in lockstep: the same parts as
    the shards without lockstep (elementwise sums: concatenation changes no number)."""
    plan, _ = _plan_and_local(log, n_repeats=1)
    plain, stepped = (_run_shards(log, plan, 2, lockstep=flag) for flag in (False, True))
    for a, b in zip(plain, stepped):
        pd.testing.assert_frame_equal(a.table, b.table, check_exact=True)
        assert a.shared_penalty == b.shared_penalty


def test_the_three_steps_of_a_fit_give_the_estimators_table(log):
    """plan = FitPlan.from_log(log, options); parts = backend.run(plan, fit_shard);
    table = plan.finish(parts): the estimator's own table (it runs the same steps)."""
    from causalrec.estimate.local import LocalBackend
    from causalrec.estimate.plan import FitPlan
    est = cr.ItemEffectEstimator(dtype="float64", n_repeats=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(log)
        plan = FitPlan.from_log(log, est.get_params())
        table = plan.finish(LocalBackend(log).run(plan, fit_shard))
    pd.testing.assert_frame_equal(table, est.effects_)
    assert plan.all_converged(table) == est.converged_
    with pytest.raises(ValueError, match="method"):
        FitPlan.from_log(log, {**est.get_params(), "method": "bogus"})
