"""Every file causalrec writes goes through here: never a partial file at the final name.

A file is written to a hidden temporary name in its own folder (same file system) and moved
into place with ``os.replace``, which is atomic: a reader, or the user after a crash, sees the
previous file or the new one, never half of one. On any error the temporary file is removed.
Several files that belong together (a report folder) are first rendered in memory (so a
failing conversion, e.g. a column pyarrow cannot store, fails before anything is written),
then all staged under temporary names, and only then moved into place.
"""
from __future__ import annotations

import io
import os
import uuid
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

__all__ = ["atomic_path", "write_bytes", "write_text", "write_files", "table_bytes", "csv_safe",
           "TABLE_SUFFIXES"]

TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def _temporary_name(path: Path) -> Path:
    # hidden, unique per writer (concurrent writers never share a temporary file)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


@contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; when the block succeeds it replaces ``path``,
    when it raises (or the replace fails) the temporary file is removed and ``path`` is left
    as it was. The parent folder is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    return write_bytes(path, text.encode(encoding))


def write_files(directory, files: dict) -> dict:
    """Write several files (name -> bytes or str, str as UTF-8) into ``directory``.

    All are staged under temporary names first; only when every one is fully written are
    they moved into place, so an error while writing (disk full, permissions) leaves the
    folder as it was. Returns name -> final path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    staged = {}
    try:
        for name, content in files.items():
            data = content.encode("utf-8") if isinstance(content, str) else content
            tmp = _temporary_name(directory / name)
            staged[name] = tmp
            tmp.write_bytes(data)
        for name, tmp in staged.items():
            os.replace(tmp, directory / name)
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
    return {name: directory / name for name in files}


def table_bytes(frame: pd.DataFrame, kind: str) -> bytes:
    """``frame`` serialised as "csv" (cells a spreadsheet would run as formulas escaped, see
    ``csv_safe``) or "parquet" (values kept). A column Parquet cannot store
    raises a ``ValueError`` naming it, before anything is written."""
    if kind == "csv":
        return csv_safe(frame).to_csv(index=False).encode("utf-8")
    if kind != "parquet":
        raise ValueError(f"table format must be 'csv' or 'parquet', got {kind!r}")
    buffer = io.BytesIO()
    try:
        frame.to_parquet(buffer, index=False)
    except (TypeError, ValueError) as exc:  # pyarrow's ArrowInvalid / ArrowTypeError
        raise ValueError(f"cannot store the table as Parquet: {_unstorable(frame) or exc}; "
                         "write CSV instead, or give the column one type") from None
    return buffer.getvalue()


def _unstorable(frame: pd.DataFrame) -> str | None:
    """The first column pyarrow rejects, as 'column 'x' mixes int and str' (or None)."""
    import pyarrow as pa

    for column in frame.columns:
        try:
            pa.array(frame[column], from_pandas=True)
        except (TypeError, ValueError):
            kinds = sorted({type(v).__name__ for v in frame[column].dropna()})
            return f"column {column!r} mixes {' and '.join(kinds)} values"
    return None


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells cannot run as spreadsheet formulas: a cell starting with
    = + - @ (or tab / CR) gets a leading single quote (OWASP's CSV-injection advice). Only
    text cells: numbers, negative ones included (also as text, like "-3.5"), are written as
    they are."""
    out = frame.copy()
    for col in out.columns:
        values = out[col]
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        text = values.map(_is_formula)
        if text.any():
            out[col] = values.where(~text, "'" + values.astype(object).where(text, "").astype(str))
    renamed = {c: "'" + c for c in out.columns if _is_formula(c)}
    return out.rename(columns=renamed) if renamed else out


def _is_formula(value) -> bool:
    if not (isinstance(value, str) and value.startswith(_FORMULA_START)):
        return False
    try:
        float(value)
        return False  # a number written as text ("-3.5") is not a formula
    except ValueError:
        return True
