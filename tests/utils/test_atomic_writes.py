"""Fault injection for every writer: an interrupted write leaves the previous file (or no
file) and no temporary file behind."""
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import causalrec.utils.io as cio
from causalrec.confounders import cache as cf
from causalrec.fairness import FairnessAudit
from causalrec.identify import CausalGraph
from causalrec.identify.draw import draw_graph
from causalrec.identify.export import to_gml
from causalrec.reporting import EffectReport
from causalrec.schema import SchemaError


class Boom(RuntimeError):
    pass


def fail_on_call(monkeypatch, owner, name, call=1, partial=None):
    """Make ``owner.name`` raise on its ``call``-th call (earlier calls go through); with
    ``partial``, the failing call first writes ``partial`` bytes to its file argument, as a
    write cut off midway would."""
    real = getattr(owner, name)
    count = {"n": 0}

    def wrapper(*args, **kwargs):
        count["n"] += 1
        if count["n"] == call:
            if partial is not None:
                target = next(a for a in args if hasattr(a, "write") or isinstance(a, Path))
                if hasattr(target, "write"):
                    target.write(partial)
                else:
                    Path(target).write_bytes(partial)
            raise Boom(f"{name} interrupted")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return count


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


def no_temporary_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def effects(n=12, seed=0, item=None):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"item": item if item is not None else [f"i{j}" for j in range(n)],
                          "ate": rng.normal(0, 0.1, n), "se": 0.05, "status": "ok", "n": 200,
                          "n_treated": 50, "treated_mean": rng.random(n)})
    return frame.assign(ci_low=frame.ate - 0.1, ci_high=frame.ate + 0.1)


# ----------------------------------------------------------------- the helper itself
def test_atomic_path_keeps_the_previous_file_when_the_block_fails(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("previous")
    with pytest.raises(Boom):
        with cio.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise Boom
    assert target.read_text() == "previous" and os.listdir(tmp_path) == ["out.txt"]


@pytest.mark.parametrize("failing, call", [("write_bytes", 2), ("replace", 1)])
def test_write_files_moves_nothing_unless_every_file_is_staged(tmp_path, monkeypatch, failing,
                                                               call):
    cio.write_files(tmp_path, {"a.csv": "old a", "b.html": "old b"})
    before = snapshot(tmp_path)
    owner = Path if failing == "write_bytes" else cio.os
    fail_on_call(monkeypatch, owner, failing, call=call, partial=b"half" if
                 failing == "write_bytes" else None)
    with pytest.raises(Boom):
        cio.write_files(tmp_path, {"a.csv": "new a", "b.html": "new b", "c.csv": "new c"})
    assert snapshot(tmp_path) == before and no_temporary_files(tmp_path)


def test_a_replace_failing_midway_leaves_whole_files_only(tmp_path, monkeypatch):
    cio.write_files(tmp_path, {"a.csv": "old a", "b.html": "old b"})
    fail_on_call(monkeypatch, cio.os, "replace", call=2)
    with pytest.raises(Boom):
        cio.write_files(tmp_path, {"a.csv": "new a", "b.html": "new b"})
    assert snapshot(tmp_path) == {"a.csv": b"new a", "b.html": b"old b"}  # each one whole
    assert no_temporary_files(tmp_path)


# ----------------------------------------------------------------- the report folder
@pytest.mark.parametrize("fault", ["to_parquet", "to_csv", "html", "replace"])
def test_interrupted_report_leaves_the_previous_report(tmp_path, monkeypatch, fault):
    EffectReport(effects(seed=1)).save(tmp_path)
    before = snapshot(tmp_path)
    assert set(before) == {"report.html", "items.csv", "items.parquet", "effects.csv",
                           "effects.parquet", "policies.csv"}
    if fault == "to_parquet":
        fail_on_call(monkeypatch, pd.DataFrame, "to_parquet")
    elif fault == "to_csv":
        fail_on_call(monkeypatch, pd.DataFrame, "to_csv", call=3)  # the policies table
    elif fault == "html":  # the page is the last file staged
        fail_on_call(monkeypatch, Path, "write_bytes", call=len(before), partial=b"<html>")
    else:
        fail_on_call(monkeypatch, cio.os, "replace")
    with pytest.raises(Boom):
        EffectReport(effects(seed=2)).save(tmp_path)
    assert snapshot(tmp_path) == before and no_temporary_files(tmp_path)


@pytest.mark.parametrize("item, match", [
    ([*range(6), *"abcdef"], "item labels mix types"),  # used to fail inside pyarrow
    ([f"i{j}" for j in range(11)] + ["i0"], "several rows"),
])
def test_a_bad_table_fails_before_any_file_is_written(tmp_path, item, match):
    out = tmp_path / "report"
    with pytest.raises(SchemaError, match=match):
        EffectReport(effects(item=item)).save(out)
    assert not out.exists()


def test_a_column_parquet_cannot_store_is_named_before_writing(tmp_path):
    table = effects().assign(note=[1, "a"] * 6)
    out = tmp_path / "report"
    with pytest.raises(ValueError, match="column 'note' mixes int and str"):
        EffectReport(table).save(out)
    assert not out.exists()
    EffectReport(table).save(out, parquet=False)  # CSV can hold it
    assert pd.read_csv(out / "effects.csv")["note"].astype(str).tolist()[:2] == ["1", "a"]


# ----------------------------------------------------------------- CLI tables, audit page
@pytest.mark.parametrize("suffix, owner, name", [
    (".parquet", pd.DataFrame, "to_parquet"), (".csv", pd.DataFrame, "to_csv"),
    (".parquet", cio.os, "replace"), (".csv", Path, "write_bytes")])
def test_cli_table_keeps_the_previous_file(tmp_path, monkeypatch, suffix, owner, name):
    from causalrec.cli.commands import _write_table

    path = tmp_path / f"effects{suffix}"
    _write_table(effects(seed=1), path)
    before = path.read_bytes()
    fail_on_call(monkeypatch, owner, name, partial=b"PAR1" if name == "write_bytes" else None)
    with pytest.raises(Boom):
        _write_table(effects(seed=2), path)
    assert path.read_bytes() == before and no_temporary_files(tmp_path)


def test_audit_page_keeps_the_previous_page(tmp_path, monkeypatch):
    path = tmp_path / "audit.html"
    FairnessAudit.report(SimpleNamespace(to_html=lambda: "<p>first</p>"), path)
    fail_on_call(monkeypatch, cio.os, "replace")
    with pytest.raises(Boom):
        FairnessAudit.report(SimpleNamespace(to_html=lambda: "<p>second</p>"), path)
    assert path.read_text() == "<p>first</p>" and no_temporary_files(tmp_path)


# ----------------------------------------------------------------- cache, graph files
def test_interrupted_cache_write_leaves_no_chunk(tmp_path, monkeypatch):
    cache = cf._EmbeddingCache(tmp_path)
    rng = np.random.default_rng(0)
    keys = np.array([b"ab" + rng.bytes(15).hex().encode() for _ in range(6)], dtype="S32")
    emb = rng.normal(size=(6, 4))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    cache.put(keys[:3], emb[:3], np.zeros(3, bool))
    before = snapshot(tmp_path / "ab")
    fail_on_call(monkeypatch, cf.np, "savez", partial=b"PK\x03\x04 half a zip")
    with pytest.raises(Boom):
        cache.put(keys[3:], emb[3:], np.zeros(3, bool))
    assert snapshot(tmp_path / "ab") == before and no_temporary_files(tmp_path)
    got, found, _ = cache.get(keys)
    assert found.tolist() == [True] * 3 + [False] * 3
    np.testing.assert_array_equal(got[:3], emb[:3])


@pytest.fixture
def graph():
    return CausalGraph.recommendation("recommended", "clicked", user=["activity"],
                                      context=["hour"])


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_interrupted_drawing_leaves_the_previous_picture(tmp_path, monkeypatch, graph, suffix):
    from matplotlib.figure import Figure

    path = draw_graph(graph, tmp_path / f"graph{suffix}")
    before = path.read_bytes()
    fail_on_call(monkeypatch, Figure, "savefig", partial=b"half a picture")
    with pytest.raises(Boom):
        draw_graph(graph, path, title="again")
    assert path.read_bytes() == before and no_temporary_files(tmp_path)


def test_interrupted_gml_leaves_the_previous_file(tmp_path, monkeypatch, graph):
    path = tmp_path / "graph.gml"
    to_gml(graph, path)
    before = path.read_text()
    assert before == to_gml(graph) + "\n"  # same text as before the helper
    fail_on_call(monkeypatch, cio.os, "replace")
    with pytest.raises(Boom):
        to_gml(graph, path)
    assert path.read_text() == before and no_temporary_files(tmp_path)
