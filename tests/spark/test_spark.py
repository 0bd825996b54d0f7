"""The Spark path equals the local estimator (float64: ate and se within 1e-8 relative,
statuses, folds and per-row outputs identical) for per_item and pooled nuisances."""
import logging
import os
import re
import shutil
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyspark")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("no Java runtime for Spark", allow_module_level=True)

import causalrec as cr
from causalrec.estimate.estimator import ItemEffectEstimator
from causalrec.refute.checks import RANDOM_COMMON_CAUSE
from causalrec.schema import InteractionLog, SchemaError
from causalrec.spark import estimate_item_effects_spark

ROLES = dict(item="item_id", treatment="recommended", outcome="clicked",
             confounders=["user_activity", "tenure", "hour"],
             categorical=["device", "user_group", "item_provider"])


@pytest.fixture(scope="session")
def spark():
    os.environ["PYSPARK_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession
    session = (SparkSession.builder.master("local[2,2]").appName("causalrec-tests")
               .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "4")
               .getOrCreate())
    yield session
    session.stop()


@pytest.fixture(scope="session")
def log_frame():
    return make_log()


def make_log(n_rows=30_000):
    """~30k rows: a skewed item, unestimable items, a missing and a rare category, outliers
    that make a column's moments winsorised (exact percentiles on Spark)."""
    df = cr.datasets.simulate_log(n_items=40, n_rows=n_rows, popularity_skew=1.3,
                                  seed=3).data.drop(columns=["user_text", "item_text"])
    df["row"] = np.arange(len(df))
    t = df["recommended"].to_numpy().copy()
    t[df["item_id"].to_numpy() == 5] = 1  # no control rows
    df["recommended"] = t
    small = df.index[df["item_id"] == 7][12:]  # too few rows per arm
    df = df.drop(index=small).reset_index(drop=True)
    device = df["device"].astype(object).to_numpy().copy()
    device[::97] = None
    device[:4] = "fridge"  # a rare level, pooled into __other__
    df["device"] = pd.Series(device, dtype="str")
    tenure = df["tenure"].to_numpy().copy()
    tenure[:30] = 150.0  # ~75 sd: the plain std is inflated 2.8x, the moments are winsorised
    df["tenure"] = tenure
    return df


@pytest.fixture(scope="session")
def small_frame():
    """The same features on 6,000 rows (12 estimable items): for the checks of plumbing
    (methods, fallbacks, CLI, audit, refutation, Connect) that do not need size."""
    return make_log(6000)


def _parquet_path(frame, tmp_path_factory):
    path = tmp_path_factory.mktemp("spark") / "log.parquet"
    frame.to_parquet(path, index=False)
    return path


@pytest.fixture(scope="session")
def parquet(spark, log_frame, tmp_path_factory):
    return spark.read.parquet(str(_parquet_path(log_frame, tmp_path_factory)))


@pytest.fixture(scope="session")
def small_path(small_frame, tmp_path_factory):
    return _parquet_path(small_frame, tmp_path_factory)


@pytest.fixture(scope="session")
def small_parquet(spark, small_path):
    return spark.read.parquet(str(small_path))


def _local(df, **options):
    log = InteractionLog(df, **{**ROLES, "item": [ROLES["item"]]},
                         propensity=options.pop("propensity", None))
    return ItemEffectEstimator(dtype="float64", **options).fit(log)


@pytest.fixture(scope="session")
def local_fit(log_frame, small_frame):
    """``_local`` of a session frame ("log" or "small"), fitted once per options."""
    fits, frames = {}, dict(log=log_frame, small=small_frame)

    def fit(name, **options):
        key = (name, tuple(sorted(options.items())))
        if key not in fits:
            fits[key] = _local(frames[name], **options)
        return fits[key]
    return fit


def _assert_same(local, spark_table):
    assert list(local.columns) == list(spark_table.columns)
    diff = local["status"].to_numpy() != spark_table["status"].to_numpy()
    assert not diff.any(), (local[diff].T.to_string(), spark_table[diff].T.to_string())
    for col in ("ate", "se"):
        a, b = local[col].to_numpy(), spark_table[col].to_numpy()
        assert (np.isnan(a) == np.isnan(b)).all()
        np.testing.assert_allclose(b[~np.isnan(a)], a[~np.isnan(a)], rtol=1e-8, atol=0)
    # the smallest propensities lie below the clip, where the estimate does not read them:
    # the GLMs' stopping rule (gradient tolerance 1e-6) leaves their logits free to ~1e-5
    # (shards=2 against one solver, locally: 3e-5 on e_min_control, 3e-13 on ate)
    tail = [c for c in local.columns if c.startswith("e_min")]
    pd.testing.assert_frame_equal(local[tail], spark_table[tail], check_exact=False, rtol=1e-4,
                                  check_dtype=False)
    pd.testing.assert_frame_equal(local.drop(columns=tail), spark_table.drop(columns=tail),
                                  check_exact=False, rtol=1e-8, check_dtype=False)


@pytest.mark.parametrize("nuisance, method, frame", [
    ("per_item", "aipw", "log"), ("pooled", "aipw", "log"),
    ("per_item", "ipw", "small"), ("pooled", "or", "small")])
def test_spark_equals_local(spark, request, local_fit, tmp_path, nuisance, method, frame):
    """Table, design spec, shards, all-reduce counts and per-row outputs equal the local
    fit's. The pooled AIPW fit has a worker killed at its 20th all-reduce: the barrier stage
    is retried as a whole and still equals the fault-free local fit."""
    from causalrec.spark.barrier import FAULT_ENV
    df = request.getfixturevalue("log_frame" if frame == "log" else "small_frame")
    sdf = request.getfixturevalue("parquet" if frame == "log" else "small_parquet")
    # two splits (n_repeats="auto" fits 16 on the large log, 4 on the small pooled one: 2-8x
    # the Spark time); per_item on the small log keeps the default, so Spark's choice of the
    # count is checked too
    repeats = {} if nuisance == "per_item" and frame == "small" else dict(n_repeats=2)
    local = local_fit(frame, nuisance=nuisance, method=method, **repeats)
    marker, env = tmp_path / "killed", spark.sparkContext.environment  # shipped with each task
    fault = nuisance == "pooled" and frame == "log"
    if fault:
        env[FAULT_ENV] = f"1:20:{marker}"
    try:
        res = estimate_item_effects_spark(sdf, **ROLES, nuisance=nuisance, method=method,
                                          dtype="float64", shards=2, row_id="row",
                                          row_outputs=True, **repeats)
    finally:
        env.pop(FAULT_ENV, None)
    assert marker.exists() == fault  # the fault did fire
    _assert_same(local.effects_, res.effects)
    _assert_same_rows(local, res, df)
    assert set(res.effects["status"]) >= {"ok", "no_control", "too_few_rows"}
    # per_item's shards are coupled only where its ridge is tuned (the small log): the
    # shards' loss sums choose it
    coupled = nuisance == "pooled" or local.plan_.tune_columns is not None
    assert coupled == (nuisance == "pooled" or frame == "small")
    assert res.pooled_mode == ("barrier" if coupled else None)
    calls = {n for n, _ in res.reductions.values()}  # every rank reduced equally often
    assert len(calls) == 1 and (calls.pop() > 0) == coupled
    assert len(np.unique(res.shard_of_item[res.shard_of_item >= 0])) == 2
    np.testing.assert_allclose(res.design_spec.center, local.design_spec_.center, rtol=1e-12)
    np.testing.assert_allclose(res.design_spec.scale, local.design_spec_.scale, rtol=1e-12)
    assert res.design_spec.categorical == local.design_spec_.categorical


def test_balancing_chosen_columns_on_spark_equals_local(small_parquet, small_frame, local_fit):
    """The balancing step on each shard (here along two numeric confounders): table and
    per-row propensities equal the local fit's."""
    columns = ("user_activity", "tenure")
    local = local_fit("small", balance_columns=columns, n_repeats=2)
    res = estimate_item_effects_spark(small_parquet, **ROLES, balance_columns=columns,
                                      n_repeats=2, dtype="float64", shards=2, row_id="row", row_outputs=True)
    assert (local.balance_shift_[local.effects_.status.eq("ok").to_numpy()] > 0).all()
    _assert_same(local.effects_, res.effects)
    _assert_same_rows(local, res, small_frame)


def _assert_same_rows(local, res, df):
    """The Spark fit's per-row outputs (keyed by row) equal the local fit's fitted rows."""
    rows = res.rows.toPandas().set_index("row_id").sort_index()
    fitted = local.propensity_.notna().to_numpy()
    assert (rows.index.to_numpy() == df["row"].to_numpy()[fitted]).all()
    assert (rows["fold"].to_numpy() == local.fold_.to_numpy()[fitted]).all()
    # a GLM whose stopping test (gradient tolerance) falls one step apart on two shards and
    # on one solver (sums in another order) moves its predictions by up to ~2e-7 relative
    # (3 rows of 27,550 on the log, measured); the table still agrees to 1e-8
    for name in ("propensity", "mu0", "mu1", "psi"):
        np.testing.assert_allclose(rows[name].to_numpy(),
                                   getattr(local, f"{name}_").to_numpy()[fitted], rtol=1e-6,
                                   atol=1e-12, err_msg=name)


def test_conditional_intervals_on_spark_equal_local(small_parquet, local_fit):
    """estimand="conditional" with n_repeats=2 on two shards: the same variance rule and the
    same combination of the splits as the local estimator."""
    local = local_fit("small", n_repeats=2, estimand="conditional")
    res = estimate_item_effects_spark(small_parquet, **ROLES, n_repeats=2, dtype="float64",
                                      shards=2, estimand="conditional")
    _assert_same(local.effects_, res.effects)
    assert res.effects.attrs["estimand"] == "conditional"


def test_one_arm_levels_on_spark_equal_local(spark):
    """Items never shown on one device (and a null device level): the same shares and
    "no_overlap" statuses from Spark's per-level aggregation as from the pandas log."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "estimate"))
    from test_positivity import segment_log
    df, _ = segment_log(2, n_items=6, rows=1500, items_violated=3)
    df.loc[df.index % 97 == 0, "device"] = None
    roles = dict(item="item", treatment="t", outcome="y", confounders=["x"],
                 categorical=["device"])
    local = ItemEffectEstimator(dtype="float64", n_repeats=2).fit(
        InteractionLog(df, **roles)).effects_
    res = estimate_item_effects_spark(spark.createDataFrame(df), **roles, dtype="float64",
                                      n_repeats=2)
    assert (local.status.to_numpy()[:3] == "no_overlap").all()
    _assert_same(local, res.effects)


def test_logged_propensity_and_top_level_call(small_parquet, local_fit, caplog):
    """cr.estimate_item_effects dispatches on a Spark frame; a logged propensity; the pooled
    fit forced off barrier mode (barrier=False: rounds of plain tasks, one Spark job per
    reduction) gives the same table and says so in a log line. max_iter=2 and one split keep
    the rounds few (each round is a Spark job; the shared-slope penalty grid's fits send
    their reductions together, sums and maxima in one; repeated splits on Spark: the two
    splits of ``test_spark_equals_local``, with per-row outputs)."""
    local = local_fit("small", nuisance="pooled", propensity="propensity", max_iter=2,
                      n_repeats=1).effects_
    with caplog.at_level(logging.INFO, logger="causalrec.spark"):
        table = cr.estimate_item_effects(small_parquet, **ROLES, propensity="propensity",
                                         nuisance="pooled", dtype="float64", shards=2,
                                         barrier=False, max_iter=2, n_repeats=1)
    _assert_same(local, table)
    assert (~table["converged"]).any()  # two steps: some fits stopped early, equally
    assert "barrier=False; running the pooled fit as rounds of plain tasks" in caplog.text
    assert re.search(r"the pooled fit in \d+ rounds", caplog.text)


def test_pooled_rounds_when_the_cluster_refuses_barrier_mode(spark, small_frame, small_parquet,
                                                            local_fit, monkeypatch, tmp_path,
                                                            caplog):
    """A cluster that refuses the barrier stage (Spark's error, raised here in its place)
    falls back to the rounds, said in a log line; a worker killed at its 20th reduction is
    retried by Spark and replays the log (deterministic): the table and the per-row outputs
    (a DataFrame from the last round) still equal the fault-free local fit's. The penalty
    grid's fits (this small log tunes the shared-slope penalty) send their reductions
    together: one round per reduction of the longest fit, plus the outputs' round."""
    from causalrec.spark import backend
    from causalrec.spark.barrier import FAULT_ENV

    def refused(*args):
        raise RuntimeError("An error occurred while calling o1234.collectToPython.\n: "
                           "org.apache.spark.SparkException: [SPARK-24942]: Barrier execution "
                           "mode does not support dynamic resource allocation for now.")
    monkeypatch.setattr(backend, "_barrier_stage", refused)
    marker, env = tmp_path / "killed", spark.sparkContext.environment
    env[FAULT_ENV] = f"1:20:{marker}"
    options = dict(nuisance="pooled", method="or", propensity="propensity", max_iter=2,
                   n_repeats=1)  # one split: each reduction is a Spark job
    try:
        with caplog.at_level(logging.INFO, logger="causalrec.spark"):
            res = estimate_item_effects_spark(small_parquet, **ROLES, dtype="float64", shards=2,
                                              row_id="row", row_outputs=True, **options)
    finally:
        env.pop(FAULT_ENV, None)
    assert marker.exists()
    local = local_fit("small", **options)
    _assert_same(local.effects_, res.effects)
    _assert_same_rows(local, res, small_frame)
    assert res.pooled_mode == "rounds"
    calls = {n for n, _ in res.reductions.values()}
    assert len(calls) == 1
    assert f"the pooled fit in {calls.pop() + 1} rounds" in caplog.text
    assert ("barrier mode unavailable (org.apache.spark.SparkException: [SPARK-24942]: Barrier "
            "execution mode does not support dynamic resource allocation") in caplog.text
    assert "running the pooled fit as rounds of plain tasks" in caplog.text
    res.rows.unpersist()


def _given_folds(row):
    """A fold per row from its row number (a Series or a Spark column), not a content hash."""
    return (row * 31 + 7) % 5 % 2


def test_graph_and_fold_column_equal_local(small_frame, small_parquet):
    """graph= (adjustment roles from the Spark column types) and folds= (a fold column of
    the Spark frame; an array for pandas) give the pandas call's table and the given folds."""
    from pyspark.sql import functions as F
    graph = cr.CausalGraph.recommendation(
        "recommended", "clicked", user=["user_activity", "tenure", "device", "user_group"],
        item=["item_provider"], context=["hour"])
    args = dict(item="item_id", treatment="recommended", outcome="clicked", graph=graph,
                nuisance="per_item", dtype="float64")
    folds = _given_folds(small_frame["row"]).to_numpy()
    local = cr.estimate_item_effects(small_frame, **args, folds=folds)
    sdf = small_parquet.withColumn("given_fold", _given_folds(F.col("row")).cast("int"))
    res = estimate_item_effects_spark(sdf, **args, folds="given_fold", shards=2, row_id="row",
                                      row_outputs=True)
    _assert_same(local, res.effects)
    assert set(res.design_spec.categorical) == {"device", "user_group", "item_provider"}
    rows = res.rows.toPandas().set_index("row_id").sort_index()
    given = pd.Series(folds, index=small_frame["row"].to_numpy())
    assert (rows["fold"].to_numpy() == given[rows.index].to_numpy()).all()
    for bad, match in ((folds, "must be the name of an integer column"),
                       ("nope", "not a column"), ("device", "must hold integers"),
                       ("hour", r"must lie in \[0, 2\), found 0..23")):
        with pytest.raises(ValueError, match=match):
            cr.estimate_item_effects(sdf, **args, folds=bad)


def test_no_estimable_item(small_parquet, small_frame):
    """No item has enough rows: statuses only (the design spec from all rows), no fit."""
    local = _local(small_frame, min_rows_per_arm=10**6)
    res = estimate_item_effects_spark(small_parquet, **ROLES, dtype="float64",
                                      min_rows_per_arm=10**6)
    statuses = set(res.effects["status"])
    assert "ok" not in statuses and statuses >= {"too_few_rows", "no_control"}
    pd.testing.assert_frame_equal(local.effects_, res.effects, check_dtype=False)
    np.testing.assert_allclose(res.design_spec.center, local.design_spec_.center, rtol=1e-12)


def test_schema_errors_match_pandas(spark, log_frame):
    def both(frame, **roles):
        with pytest.raises(SchemaError) as local:
            cr.estimate_item_effects(frame, **{**ROLES, **roles})
        with pytest.raises(SchemaError) as remote:
            cr.estimate_item_effects(spark.createDataFrame(frame), **{**ROLES, **roles})
        assert str(remote.value) == str(local.value)
        assert remote.value.column == local.value.column

    frame = log_frame.iloc[:3000].copy()
    both(frame, confounders=["user_activity", "no_such_column"])
    both(pd.concat([frame, frame[["user_activity"]]], axis=1))  # a repeated column (issue 26)
    t = frame["recommended"].to_numpy().copy()
    t[2500] = 2  # beyond the validated sample: found by the Spark-wide check
    frame["recommended"] = t
    both(frame)


def test_spark_only_names_and_types_are_schema_errors_with_the_fix(spark, log_frame):
    """A '.' in a role's column name (a struct field to Spark) and a decimal confounder or
    outcome (Decimal objects in pandas) raised Spark's AnalysisException or "must be
    numeric ... pd.to_numeric": now a SchemaError naming the column and the Spark fix."""
    from pyspark.sql import functions as F
    sdf = spark.createDataFrame(log_frame.iloc[:3000])
    dotted = sdf.withColumnRenamed("hour", "hour.of.day")
    roles = {**ROLES, "confounders": ["user_activity", "tenure", "hour.of.day"]}
    with pytest.raises(SchemaError, match=r"withColumnRenamed\('hour.of.day', 'hour_of_day'\)"):
        cr.estimate_item_effects(dotted, **roles)
    for col in ("tenure", "clicked"):
        decimal = sdf.withColumn(col, F.col(col).cast("decimal(18,6)"))
        with pytest.raises(SchemaError, match=rf"column '{col}': Spark type decimal\(18,6\) "
                           r".*cast\('double'\)") as error:
            cr.estimate_item_effects(decimal, **ROLES)
        assert error.value.column == col and "\n" not in str(error.value)
    fixed = (sdf.withColumn("tenure", F.col("tenure").cast("decimal(18,6)"))
             .withColumn("tenure", F.col("tenure").cast("double")))  # as the message says
    assert (cr.estimate_item_effects(fixed, **ROLES, n_repeats=1)["status"] == "ok").any()


def test_missing_indicator_on_spark_equals_local(spark, small_frame):
    """missing="indicator" with missing values as Spark nulls (tenure) and as NaN (hour):
    the same fill (exact: order statistics), indicator columns, moments and table as the
    local fit; without the option both raise the same error, naming it."""
    from pyspark.sql import functions as F
    rng = np.random.default_rng(4)
    df = small_frame.assign(tenure=small_frame["tenure"].mask(rng.random(len(small_frame)) < 0.2),
                            hour=small_frame["hour"].astype(float).mask(small_frame["row"] % 13 == 0))
    sdf = spark.createDataFrame(df)
    sdf = sdf.withColumn("tenure", F.when(~F.isnan("tenure"), F.col("tenure")))  # NaN -> null
    roles = {**ROLES, "missing": "indicator"}
    local = cr.ItemEffectEstimator(dtype="float64", n_repeats=2).fit(
        InteractionLog(df, **{**roles, "item": [ROLES["item"]]}))
    res = estimate_item_effects_spark(sdf, **roles, dtype="float64", shards=2, row_id="row",
                                      n_repeats=2)
    assert local.design_spec_.indicators == ["tenure", "hour"]
    assert res.design_spec.fill == local.design_spec_.fill
    assert res.design_spec.indicators == local.design_spec_.indicators
    assert res.design_spec.columns == local.design_spec_.columns
    np.testing.assert_allclose(res.design_spec.center, local.design_spec_.center, rtol=1e-12)
    np.testing.assert_allclose(res.design_spec.scale, local.design_spec_.scale, rtol=1e-12)
    _assert_same(local.effects_, res.effects)
    with pytest.raises(SchemaError, match="missing='indicator'") as remote:
        estimate_item_effects_spark(sdf, **ROLES)
    with pytest.raises(SchemaError) as pandas:
        cr.estimate_item_effects(df, **ROLES)
    # the same words; the count is of the rows shown to InteractionLog (a sample, witnesses)
    count = lambda error: re.sub(r"\d+ NaN", "N NaN", str(error.value))
    assert count(remote) == count(pandas)


CONNECT_SCRIPT = """
import sys
import causalrec as cr
from pyspark.sql import SparkSession
spark = SparkSession.builder.remote(sys.argv[3]).getOrCreate()
spark.conf.set("spark.sql.shuffle.partitions", "4")  # as the tests' session: fewer tasks
sdf = spark.read.parquet(sys.argv[1])
assert type(sdf).__module__.startswith("pyspark.sql.connect")
table = cr.estimate_item_effects(sdf, item="item_id", treatment="recommended", outcome="clicked",
    confounders={confounders!r}, categorical={categorical!r}, nuisance="pooled",
    dtype="float64", shards=2, row_id="row", n_repeats=1)
table.to_pickle(sys.argv[2])
spark.stop()
"""


def test_spark_connect_smoke(spark, small_path, local_fit, tmp_path):
    """Through Spark Connect, pooled, one split (the splits' combination on Spark:
    ``test_spark_equals_local``). The client runs in its own process (one kind of session
    per process); the server is this session's JVM (a Connect service started on it: a
    second JVM took ~40 s more)."""
    pytest.importorskip("grpc")
    import socket
    import subprocess
    service = spark._jvm.org.apache.spark.sql.connect.service.SparkConnectService
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    spark._jsc.sc().conf().set("spark.connect.grpc.binding.port", str(port))
    service.start(spark._jsc.sc())
    out = tmp_path / "effects.pkl"
    script = CONNECT_SCRIPT.format(confounders=ROLES["confounders"], categorical=ROLES["categorical"])
    try:
        done = subprocess.run([sys.executable, "-c", script, str(small_path), str(out),
                               f"sc://localhost:{port}"], capture_output=True, text=True,
                              timeout=300)
    finally:
        none = spark._jvm.scala.Option.empty()
        service.stop(none, none)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same(local_fit("small", nuisance="pooled", n_repeats=1).effects_,
                 pd.read_pickle(out))


CLI_FLAGS = ["--item", "item_id", "--treatment", "recommended", "--outcome", "clicked",
             "--confounders", ",".join(ROLES["confounders"]),
             "--categorical", ",".join(ROLES["categorical"]), "--dtype", "float64", "-q",
             "--repeats", "2"]


def test_cli_spark_equals_cli_local(spark, small_path, tmp_path):
    """``causalrec effects LOG --spark local[2]`` (reusing the active session) writes the
    table the local command writes from the same Parquet file (pooled: the barrier stage;
    per_item on Spark is test_spark_equals_local's)."""
    from causalrec.cli import main
    for nuisance in ("pooled",):
        tables = {}
        for name, extra in (("local", []), ("spark", ["--spark", "local[2]"])):
            out = tmp_path / f"{name}-{nuisance}.parquet"
            assert main(["effects", str(small_path), *CLI_FLAGS, "--nuisance", nuisance,
                         "--out", str(out), *extra]) == 0
            tables[name] = pd.read_parquet(out)
        _assert_same(tables["local"], tables["spark"])
    # --graph: the adjustment set supplies the confounders (on Spark from the schema alone)
    from causalrec.identify import CausalGraph
    CausalGraph.recommendation("recommended", "clicked", user=["user_activity", "user_group"],
                               context=["hour", "device"]).to_gml(tmp_path / "graph.gml")
    flags = [*CLI_FLAGS[:6], "--graph", str(tmp_path / "graph.gml"), *CLI_FLAGS[10:]]
    tables = {}
    for name, extra in (("local", []), ("spark", ["--spark", "local[2]"])):
        out = tmp_path / f"graph-{name}.parquet"
        assert main(["effects", str(small_path), *flags, "--out", str(out), *extra]) == 0
        tables[name] = pd.read_parquet(out)
    _assert_same(tables["local"], tables["spark"])
    assert not np.allclose(tables["local"]["ate"].fillna(0), pd.read_parquet(
        tmp_path / "local-pooled.parquet")["ate"].fillna(0))  # the graph's set, not the flags'


def test_cli_spark_errors_are_one_line(spark, log_frame, tmp_path, capsys):
    from causalrec.cli import main
    path = tmp_path / "log.parquet"
    log_frame.iloc[:2000].to_parquet(path, index=False)
    csv = tmp_path / "log.csv"
    log_frame.iloc[:10].to_csv(csv, index=False)
    cases = [([str(csv), *CLI_FLAGS], "--spark reads Parquet"),
             ([str(tmp_path / "nope.parquet"), *CLI_FLAGS], "no such log"),
             ([str(path), *CLI_FLAGS[:7], "user_activity,no_such_column", *CLI_FLAGS[8:]],
              "no_such_column")]
    for argv, expected in cases:
        assert main(["effects", *argv, "--out", str(tmp_path / "e.csv"), "--spark"]) == 2  # bad input
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("causalrec: error: ") and expected in err[0]


def test_percentile_fraction_of_every_rank():
    """Spark's exact percentile at p reads position (n - 1) * p: the fraction hits the rank
    exactly, or (no float64 p does, e.g. rank 30 of 3000) lands a few ulps above it."""
    from causalrec.spark.stage0 import _exact_fraction
    for n in (3000, 30_001, 10**6 + 7):
        for rank in range(0, n, max(1, n // 997)):
            position = float(n - 1) * _exact_fraction(rank, n)
            assert rank <= position <= rank + 4 * np.spacing(float(max(rank, 1)))


def test_tail_order_statistics_are_exact_from_narrow_brackets(parquet, log_frame):
    """Stage 0's winsorising order statistics equal numpy's, found inside approx_percentile
    brackets that hold the rank and (a continuous column) only a few rows."""
    from pyspark.sql import functions as F
    from causalrec.estimate.design import tail_ranks
    from causalrec.spark.stage0 import _ACCURACY, _brackets, _order_statistics
    n, cols = len(log_frame), ROLES["confounders"]
    ranks = tail_ranks(n)
    values = [F.col(c).cast("double") for c in cols]
    first = parquet.agg(*[_brackets(v, [r / n for r in ranks]).alias(c)
                          for v, c in zip(values, cols)]).first()
    got = _order_statistics(parquet, values, [first[c] for c in cols], [ranks] * len(cols),
                            [n] * len(cols))
    for col, values in zip(cols, got):
        v = np.sort(log_frame[col].to_numpy(np.float64))
        np.testing.assert_allclose(values, v[list(ranks)], rtol=1e-12, atol=0)
        b = first[col]
        for j, rank in enumerate(ranks):
            assert b[2 * j] <= v[rank] <= b[2 * j + 1]
    b, v = first["user_activity"], log_frame["user_activity"].to_numpy(np.float64)
    # -+ 3 rank errors around the rank, each end off by at most 2 (merged summaries)
    assert ((v >= b[0]) & (v <= b[1])).sum() <= 10 * n / _ACCURACY + 2


# ---------------------------------------------------------------- text, audit, refutation, CLI
TEXT_ROLES = dict(item="item_id", treatment="recommended", outcome="clicked",
                  confounders=["user_activity"], categorical=["device"],
                  text=["user_text", "item_text"])


def test_text_on_spark_equals_local(spark, tmp_path):
    """Text columns embedded on the executors, the PCA fitted on the driver from every unique
    text (they fit the sample), components and the pair cosine joined back: the same
    components and the same effects as the local fit (missing and blank texts included)."""
    df = cr.datasets.simulate_log(n_items=8, n_rows=3000, seed=5).data
    user_text = df["user_text"].astype(object).to_numpy().copy()
    user_text[::50], user_text[1::50] = None, "  "  # both encoded as the missing text
    df["user_text"] = pd.Series(user_text, dtype="str")
    path = tmp_path / "text.parquet"
    df.assign(row=np.arange(len(df))).to_parquet(path, index=False)
    log = InteractionLog(df, **{**TEXT_ROLES, "item": ["item_id"]})
    local = ItemEffectEstimator(dtype="float64", nuisance="pooled", n_repeats=2).fit(log)
    res = estimate_item_effects_spark(spark.read.parquet(str(path)), **TEXT_ROLES,
                                      nuisance="pooled", dtype="float64", shards=2, row_id="row",
                                      n_repeats=2)
    _assert_same(local.effects_, res.effects)  # the balancing step included, on each shard
    assert (local.balance_shift_[local.effects_.status.eq("ok").to_numpy()] > 0).all()
    assert res.design_spec.extra == local.design_spec_.extra  # 2 x 8 components + the cosine
    assert res.design_spec.extra[-1] == "user_text~item_text_cos"
    np.testing.assert_allclose(res.design_spec.center, local.design_spec_.center, rtol=1e-10,
                               atol=1e-12)  # the components' means are 0 up to rounding
    remote_text, local_text = res.estimator.text_confounders_, local.text_confounders_
    for col in TEXT_ROLES["text"]:
        np.testing.assert_allclose(remote_text.reducers_[col].components_,
                                   local_text.reducers_[col].components_, rtol=0, atol=1e-12)
    for name in ("n_rows", "n_unique", "n_missing", "n_components"):
        assert (remote_text.report_[name] == local_text.report_[name]).all(), name
    assert remote_text.report_.loc["user_text", "n_missing"] == 120
    for table in remote_text.persisted_:
        table.unpersist()


AUDIT = dict(item="item_id", treatment="recommended", outcome="clicked", group="user_group",
             confounders=ROLES["confounders"], categorical=["device", "user_group"],
             provider="item_provider")
AUDIT_TABLES = ("groups_", "group_effects_", "disparity_", "overall_disparity_", "exposure_",
                "benefit_", "providers_", "metrics")


def _assert_same_audit(local, fit):
    for name in AUDIT_TABLES:
        pd.testing.assert_frame_equal(getattr(local, name), getattr(fit, name),
                                      check_exact=False, rtol=1e-8, check_dtype=False,
                                      check_index_type=False, obj=name)


def test_audit_on_spark_equals_pandas(small_parquet, small_frame):
    """FairnessAudit.fit on the Spark frame (item x group effects on Spark, exposure models
    in a barrier stage): every table equals the pandas audit's."""
    from causalrec.fairness import FairnessAudit
    kw = dict(AUDIT, estimator=ItemEffectEstimator(dtype="float64", n_repeats=2))
    local = FairnessAudit(**kw).fit(small_frame)
    remote = FairnessAudit(**kw).fit(small_parquet)
    _assert_same_audit(local, remote)
    assert (local.exposure_["logit_shift_se"].dropna() > 0).all()  # the shared fit ran
    assert remote.summary().info == local.summary().info
    with pytest.raises(TypeError, match="read metrics"):
        remote.metric_frame()
    with pytest.raises(SchemaError, match="varies within an item"):
        FairnessAudit(**{**kw, "provider": "hour"}).fit(small_parquet)


def test_audit_with_missing_values_on_spark_equals_pandas(spark, small_frame, tmp_path):
    """FairnessAudit(missing="indicator") on a log with missing tenure (nulls in Parquet):
    the Spark effect segments and exposure models fill and flag as the pandas ones do, so
    every table equals the pandas audit's; without the option both raise, naming it."""
    from causalrec.fairness import FairnessAudit
    frame = small_frame.assign(tenure=small_frame["tenure"].mask(small_frame["row"] % 7 == 0))
    frame.to_parquet(tmp_path / "missing.parquet", index=False)
    sdf = spark.read.parquet(str(tmp_path / "missing.parquet"))
    kw = dict(AUDIT, estimator=ItemEffectEstimator(dtype="float64", n_repeats=2),
              missing="indicator")
    local = FairnessAudit(**kw).fit(frame)
    remote = FairnessAudit(**kw).fit(sdf)
    _assert_same_audit(local, remote)
    for data in (frame, sdf):
        with pytest.raises(SchemaError, match="column 'tenure'.*missing='indicator'"):
            FairnessAudit(**{**kw, "missing": "error"}).fit(data)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("CAUSALREC_LONG_TESTS"),
                    reason="~400 Spark jobs (4-5 min); set CAUSALREC_LONG_TESTS=1 to run it")
def test_audit_on_spark_without_barrier_mode(small_parquet, small_frame, caplog):
    """The audit with barrier=False: the effects and the exposure models as rounds of plain
    tasks (``run_pooled``), said in log lines, every table equal to the pandas audit's.
    Slow: the exposure models take ~400 reductions (max_iter >= 50), one Spark job each;
    max_iter=2 keeps the effects' rounds few."""
    from causalrec.fairness import FairnessAudit
    from causalrec.spark.audit import fit_audit_spark
    kw = dict(AUDIT, estimator=ItemEffectEstimator(dtype="float64", max_iter=2))
    local = FairnessAudit(**kw).fit(small_frame)
    with caplog.at_level(logging.WARNING, logger="causalrec.spark"):
        rounds = fit_audit_spark(FairnessAudit(**kw), small_parquet, barrier=False)
    assert "barrier=False; running the exposure models as rounds of plain tasks" in caplog.text
    assert "barrier=False; running the pooled fit as rounds of plain tasks" in caplog.text
    _assert_same_audit(local, rounds)


def test_refutation_on_spark_equals_local_refits(small_parquet, small_frame):
    """Placebo and random common cause on Spark: each replicate equals the local estimator
    on the same changed rows (the same folds for the random cause); subset raises. The
    refutation fits one split unless asked (``refute_item_effects``), so the local fits
    compared here do too."""
    from pyspark.sql import functions as F
    from causalrec.refute.checks import RANDOM_COMMON_CAUSE
    from causalrec.spark.refute import permute_within
    from causalrec.spark.shard import ROW_ID
    table = cr.refute_item_effects(small_parquet, **ROLES, dtype="float64", shards=2, seed=4)
    assert set(table["check"]) == {"placebo", "random_common_cause"}
    rows = small_parquet.withColumn(ROW_ID, F.monotonically_increasing_id())
    noisy = rows.withColumn(RANDOM_COMMON_CAUSE, F.randn(5)).toPandas().sort_values(ROW_ID)
    placebo = (permute_within(rows, ["item_id"], "recommended", 4).toPandas()
               .sort_values(ROW_ID))
    assert (noisy["row"].to_numpy() == small_frame["row"].to_numpy()).all()
    original = _local(small_frame, seed=4, n_repeats=1)
    rcc = ItemEffectEstimator(dtype="float64", seed=4, n_repeats=1).fit(
        InteractionLog(noisy.reset_index(drop=True), **{
            **ROLES, "item": ["item_id"],
            "confounders": ROLES["confounders"] + [RANDOM_COMMON_CAUSE]}),
        folds=original.fold_.to_numpy())
    permuted = _local(placebo.reset_index(drop=True), seed=4, n_repeats=1)
    assert not (placebo["recommended"].to_numpy() == small_frame["recommended"].to_numpy()).all()
    for check, local in (("random_common_cause", rcc), ("placebo", permuted)):
        part = table[table["check"] == check].set_index("item_id")
        expected = local.effects_.set_index("item")
        np.testing.assert_array_equal(part["status"], expected["status"], err_msg=check)
        for got, want in (("estimate", "ate"), ("se", "se")):
            np.testing.assert_allclose(part[got], expected[want], rtol=1e-8, atol=0)
        np.testing.assert_allclose(part["original_ate"], original.effects_["ate"].to_numpy(),
                                   rtol=1e-8, atol=0)
    with pytest.raises(ValueError, match="subset check does not run on a Spark frame"):
        cr.refute_item_effects(small_parquet, **ROLES, checks=["subset"])


AUDIT_FLAGS = ["--group", "user_group", "--provider", "item_provider"]


def test_cli_report_and_audit_spark(spark, small_path, tmp_path, capsys):
    """``report --spark`` and ``audit --spark`` write the local commands' tables; a bad
    column is a one-line error on both."""
    from causalrec.cli import main
    path = small_path
    out = {}
    for name, extra in (("local", []), ("spark", ["--spark", "local[2]"])):
        assert main(["report", str(path), *CLI_FLAGS, "--out", str(tmp_path / f"r{name}"),
                     *extra]) == 0
        assert main(["audit", str(path), *CLI_FLAGS, *AUDIT_FLAGS,
                     "--out", str(tmp_path / f"a{name}"), *extra]) == 0
        out[name] = (pd.read_csv(tmp_path / f"r{name}" / "effects.csv"),
                     pd.read_csv(tmp_path / f"a{name}" / "disparity.csv"))
        assert (tmp_path / f"r{name}" / "report.html").exists()
        assert (tmp_path / f"a{name}" / "audit.html").exists()
    for local, remote in zip(out["local"], out["spark"]):
        pd.testing.assert_frame_equal(local, remote, check_exact=False, rtol=1e-6)
    capsys.readouterr()
    bad = [*CLI_FLAGS[:7], "user_activity,no_such_column", *CLI_FLAGS[8:]]
    for command, extra in (("report", []), ("audit", AUDIT_FLAGS)):
        assert main([command, str(path), *bad, *extra, "--out", str(tmp_path / "x"),
                     "--spark"]) == 2  # bad input
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("causalrec: error: ") and "no_such_column" in err[0]


def test_offset_continuous_outcome_on_spark_equals_local(spark, small_frame):
    """A continuous outcome with an offset of 1e8 is fitted centred and scaled on Spark as
    locally (the centre and scale from one aggregation): float32 on Spark gives the local
    float64 answer within 0.05 SE, and the same outcome scale."""
    noise = np.random.default_rng(11).normal(size=len(small_frame))
    y = small_frame["user_activity"] + 0.5 * small_frame["recommended"] + noise + 1e8
    df = small_frame.assign(spend=y)
    roles = {**ROLES, "outcome": "spend"}
    local = cr.ItemEffectEstimator(dtype="float64", n_repeats=2).fit(
        cr.InteractionLog(df, **{**roles, "item": [roles["item"]]}))
    res = estimate_item_effects_spark(spark.createDataFrame(df), **roles, dtype="float32",
                                      shards=2, row_id="row", n_repeats=2)
    ok = (local.effects_["status"] == "ok").to_numpy()
    assert (res.effects["status"].to_numpy() == local.effects_["status"].to_numpy()).all()
    gap = np.abs(res.effects["ate"].to_numpy() - local.effects_["ate"].to_numpy())[ok]
    assert ok.sum() > 5 and (gap / local.effects_["se"].to_numpy()[ok]).max() < 0.05
    np.testing.assert_allclose(res.estimator.outcome_scale_.center,
                               local.outcome_scale_.center, rtol=1e-14)
    # values divided by their largest magnitude (1e8) keep their spread to ~1e-16 / 1e-8:
    # Spark's running stddev and numpy's two passes agree to ~1e-8 (any scale would do: the
    # predictions are mapped back with the same one)
    np.testing.assert_allclose(res.estimator.outcome_scale_.scale,
                               local.outcome_scale_.scale, rtol=1e-6)


UPLIFT = dict(features=["user_activity", "tenure"], categorical=["device"], n_bootstrap=19,
              n_repeats=1, dtype="float64")


def test_uplift_on_spark_equals_pandas(spark, small_frame, tmp_path):
    """UpliftModel.fit on the Spark frame (row_id = the pandas positions): the same items,
    penalties, coefficients, covariances, heterogeneity table (bootstrap weights are drawn
    per row key, so the p-values too) and predictions as the pandas fit. Both sides do the
    same float64 arithmetic up to summation order (partial sums per partition): 1e-8
    relative leaves ~7 orders of magnitude above that rounding (~1e-15)."""
    roles = dict(ROLES, item="item_id")
    frame = small_frame.assign(row=np.arange(len(small_frame)))  # the keys of the pandas rows
    frame.to_parquet(tmp_path / "uplift.parquet", index=False)
    local = cr.UpliftModel(**UPLIFT).fit(InteractionLog(frame, **roles))
    remote = cr.UpliftModel(**UPLIFT).fit(spark.read.parquet(str(tmp_path / "uplift.parquet")),
                                          **roles, row_id="row")
    assert list(remote.items_) == list(local.items_)
    assert remote.shrinkage_ == local.shrinkage_
    assert remote.response_shrinkage_ == local.response_shrinkage_
    assert remote.encoder_.columns_ == local.encoder_.columns_
    for name in ("coef_", "heterogeneity_", "cv_results_", "response_cv_results_"):
        pd.testing.assert_frame_equal(getattr(local, name), getattr(remote, name),
                                      check_exact=False, rtol=1e-8, atol=1e-12, obj=name)
    np.testing.assert_allclose(remote.cov_.numpy(), local.cov_.numpy(), rtol=1e-8, atol=1e-14)
    users = frame.head(200)
    np.testing.assert_allclose(remote.effect(users), local.effect(users), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(remote.response(users), local.response(users), rtol=1e-8, atol=1e-12)
    g = remote.pseudo_outcome_.toPandas().set_index("row_id").sort_index()["pseudo_outcome"]
    np.testing.assert_allclose(g.to_numpy(), local.pseudo_outcome_.dropna().to_numpy(),
                               rtol=1e-8, atol=1e-12)


def test_uplift_with_missing_values_on_spark_equals_pandas(spark, small_frame, tmp_path):
    """A log with missing tenure (a confounder and a feature) and missing="indicator": the
    Spark fit's feature fill and indicator (stage 0's order statistics), coefficients and
    predictions equal the pandas fit's."""
    roles = dict(ROLES, item="item_id")
    frame = small_frame.assign(row=np.arange(len(small_frame)),
                               tenure=small_frame["tenure"].mask(small_frame["row"] % 7 == 0))
    frame.to_parquet(tmp_path / "uplift_missing.parquet", index=False)
    options = dict(UPLIFT, n_bootstrap=0)
    local = cr.UpliftModel(**options).fit(InteractionLog(frame, **roles, missing="indicator"))
    remote = cr.UpliftModel(**options).fit(
        spark.read.parquet(str(tmp_path / "uplift_missing.parquet")), **roles,
        missing="indicator", row_id="row")
    assert remote.encoder_.missing_.fill == local.encoder_.missing_.fill
    assert remote.encoder_.missing_.indicators == local.encoder_.missing_.indicators == ["tenure"]
    assert remote.encoder_.columns_ == local.encoder_.columns_
    pd.testing.assert_frame_equal(local.coef_, remote.coef_, check_exact=False, rtol=1e-8,
                                  atol=1e-12)
    users = frame.head(200)
    np.testing.assert_allclose(remote.effect(users), local.effect(users), rtol=1e-8, atol=1e-12)


def test_uplift_on_spark_bad_input(small_parquet):
    """The pandas errors, one line each: a missing feature column (SchemaError), a non-finite
    feature value anywhere in the frame, text features (ValueError), roles missing."""
    roles = dict(ROLES, item="item_id")
    with pytest.raises(SchemaError, match="nope"):
        cr.UpliftModel(features=["nope"]).fit(small_parquet, **roles)
    with pytest.raises(ValueError, match="text features need the pandas fit"):
        cr.UpliftModel(text=["device"]).fit(small_parquet, **roles)
    from pyspark.sql import functions as F
    bad = small_parquet.withColumn("tenure", F.when(F.col("row") == 4321, float("nan"))
                                   .otherwise(F.col("tenure")))
    with pytest.raises(SchemaError, match="tenure"):
        cr.UpliftModel(features=["tenure"]).fit(bad, **roles)
    with pytest.raises(TypeError, match="missing"):
        cr.UpliftModel(features=["tenure"]).fit(small_parquet)


def test_refutation_on_spark_takes_a_graph(small_parquet, small_frame, monkeypatch):
    """graph= on Spark maps the adjustment set to roles by the Spark column types, as locally:
    every Spark estimate of the loop gets the roles the pandas frame gives (the estimates
    themselves are replaced by a recorder: their equality is test_graph_and_fold_column...)."""
    import causalrec.spark.refute as spark_refute
    graph = cr.CausalGraph.recommendation(
        "recommended", "clicked", user=["user_activity", "tenure", "device"], context=["hour"])
    roles = graph.merge_adjustment(small_frame)
    calls = []

    def record(data, item, treatment, outcome, *, confounders, categorical, **options):
        calls.append((list(confounders), list(categorical), options["fold_columns"]))
        effects = pd.DataFrame({"item": [0], "ate": [0.1], "se": [1.0], "p_value": [0.9],
                                "status": ["ok"]})
        return SimpleNamespace(effects=effects)

    monkeypatch.setattr(spark_refute, "estimate_item_effects_spark", record)
    table = cr.refute_item_effects(small_parquet, item="item_id", treatment="recommended",
                                   outcome="clicked", graph=graph)
    assert roles["categorical"] == ["device"] and list(table["check"]) == list(spark_refute.SPARK_CHECKS)
    fold_columns = ["item_id"] + roles["confounders"] + roles["categorical"]
    assert calls == [(roles["confounders"], roles["categorical"], fold_columns),
                     (roles["confounders"], roles["categorical"], None),
                     (roles["confounders"] + [RANDOM_COMMON_CAUSE], roles["categorical"],
                      fold_columns)]


def test_boosted_nuisance_on_spark_equals_local(spark, small_frame):
    """A flexible nuisance on Spark: one task holds every fitted row (never the driver), with
    the local fit's folds, item codes and seeds, so the boosters and the table are the same."""
    pytest.importorskip("xgboost")
    df = small_frame[small_frame["item_id"] < 8].reset_index(drop=True)
    local = _local(df, nuisance="boosted")
    res = estimate_item_effects_spark(spark.createDataFrame(df), **ROLES, nuisance="boosted",
                                      dtype="float64", row_id="row", row_outputs=True)
    _assert_same(local.effects_, res.effects)
    _assert_same_rows(local, res, df)
    assert res.pooled_mode is None and len(res.reductions) == 1


def test_local_and_spark_backends_agree_on_random_small_logs(spark):
    """Property: on random small logs (items, rows, skew, seed, nuisance, method drawn by
    hypothesis; few examples, derandomised) the Spark backend's table equals the local one."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.settings(max_examples=3, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(n_items=st.integers(2, 6), n_rows=st.integers(400, 1200),
                      seed=st.integers(0, 2**16), nuisance=st.sampled_from(["pooled", "per_item"]),
                      method=st.sampled_from(["aipw", "ipw", "or"]))
    def agree(n_items, n_rows, seed, nuisance, method):
        df = cr.datasets.simulate_log(n_items=n_items, n_rows=n_rows, seed=seed).data.drop(
            columns=["user_text", "item_text"])
        df["row"] = np.arange(len(df))
        options = dict(nuisance=nuisance, method=method, n_repeats=1)
        local = _local(df, **options)
        res = estimate_item_effects_spark(spark.createDataFrame(df), **ROLES, dtype="float64",
                                          shards=2, row_id="row", **options)
        _assert_same(local.effects_, res.effects)
    agree()
