"""Reading a log file: CSV, TSV or Parquet, optionally compressed, chosen by its suffixes.
Ids stay as written, a Parquet file's named index levels are columns, and a file that
cannot be a log (empty, another separator, a wrong compression) is a one-line
``SchemaError`` naming it. ``causalrec.schema`` re-exports ``read_log``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .frames import SchemaError

__all__ = ["COMPRESSIONS", "read_log"]


# compression suffixes pandas and the standard library can undo (zst: the zstandard package)
COMPRESSIONS = {".gz": "gzip", ".gzip": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd",
                ".zip": "zip"}
_FORMATS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".parquet": None, ".pq": None}


def read_log(path, encoding: str = "utf-8", ids=()) -> pd.DataFrame:
    """Read a log from CSV, TSV or Parquet, chosen by the file suffixes: the format suffix may
    be followed by a compression suffix (``.csv.gz``, ``.tsv.zst``, ``.parquet.gz``, ... of
    ``COMPRESSIONS``); a bare ``.gz`` is a compressed CSV. ``encoding`` is the text encoding
    of a CSV / TSV (e.g. "latin-1", "cp1252"). ``ids``: the CSV's id and category columns
    (item, unit, categorical confounders), kept as written ("007" and "7" are two items,
    not the number 7) and read as integers only where that loses nothing; a Parquet file
    keeps its own types."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such log file: {path}")
    fmt, compression = _log_format(path)
    if _FORMATS[fmt] is None:
        return _read_parquet(path, compression)
    # pandas passes over names that are not columns
    as_text = {col: str for col in ([ids] if isinstance(ids, str) else ids or ())}
    try:  # "item, t, y": the spaces after a separator are layout, not part of a name or id
        df = pd.read_csv(path, sep=_FORMATS[fmt], encoding=encoding, compression=compression,
                         dtype=as_text or None, skipinitialspace=True)
    except UnicodeDecodeError as exc:
        raise SchemaError(None, f"cannot read {path}: it is not {encoding} text ({exc.reason} "
                          f"at byte {exc.start}); pass its encoding, e.g. "
                          "encoding='latin-1' (--encoding on the command line)") from None
    except LookupError:
        raise ValueError(f"unknown text encoding {encoding!r} for {path}") from None
    except pd.errors.EmptyDataError:  # pandas' own words name neither the file nor the fix
        raise SchemaError(None, f"cannot read {path}: the file is empty (no header row)") from None
    except (OSError, EOFError) as exc:  # bad gzip / zstd stream: a wrong suffix or a cut file
        raise SchemaError(None, f"cannot read {path} as {compression or 'uncompressed'} "
                          f"{fmt[1:]}: {exc}") from None
    for col in as_text:
        if col in df.columns:
            df[col] = _integers_if_exact(df[col])
    _check_separator(df, path, _FORMATS[fmt])
    return _repeated_header(df, path, sep=_FORMATS[fmt], encoding=encoding,
                            compression=compression)


# an integer written canonically: read back as a number, it is written the same way
_CANONICAL_INTEGER = r"0|-?[1-9][0-9]{0,17}"


def _integers_if_exact(s: pd.Series) -> pd.Series:
    """An id column read as text, as int64 where every value is an integer written as an
    integer prints (so "7" and "42" stay numbers, as pandas would read them, while "007",
    "1e3" or "7.0" keep the column text); missing values keep it text too."""
    if s.isna().any() or not s.str.fullmatch(_CANONICAL_INTEGER).all():
        return s
    return s.astype(np.int64)


def _index_as_columns(df: pd.DataFrame) -> pd.DataFrame:
    """A frame saved with ``df.set_index(["item", ...]).to_parquet(...)`` comes back with its
    named index levels; in a log file they are columns like the others."""
    named = [name for name in df.index.names if name is not None and name not in df.columns]
    return df.reset_index(level=named) if named else df


def _log_format(path: Path) -> tuple[str, str | None]:
    """(format suffix, pandas compression name or None) from all of the file's suffixes."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = COMPRESSIONS.get(suffixes[-1]) if suffixes else None
    fmt = suffixes[-2] if compression and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
    if compression and fmt not in _FORMATS and not fmt[1:].isalpha():
        fmt = ".csv"  # "log.gz", "log.2024.gz": a compressed CSV, as before ("x.json.gz" is not)
    if fmt not in _FORMATS:
        raise SchemaError(None, f"cannot read {path.name}: expected a .csv or .parquet file (or "
                          f".tsv), optionally compressed ({', '.join(COMPRESSIONS)})")
    if compression == "zstd":
        try:
            import zstandard  # noqa: F401
        except ImportError:
            raise SchemaError(None, f"cannot read {path.name}: .zst files need the zstandard "
                              "package (pip install zstandard)") from None
    return fmt, compression


def _repeated_header(df: pd.DataFrame, path: Path, **csv) -> pd.DataFrame:
    """pandas renames a repeated CSV header ("x", "x" -> "x", "x.1"), so a role naming "x"
    would silently take the first copy; the file's own labels go back on, and the log door
    refuses a repeated role column as it does in a DataFrame."""
    names = [str(c) for c in df.columns]
    if not any(c.rpartition(".")[0] in names and c.rpartition(".")[2].isdigit() for c in names):
        return df
    header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False,
                         skipinitialspace=True, **csv)
    labels = header.iloc[0].tolist()
    if len(labels) == len(names) and len(set(labels)) < len(labels):
        df.columns = labels
    return df


def _check_separator(df: pd.DataFrame, path: Path, sep: str) -> None:
    """A log has three roles at least: one column whose header holds another separator is a
    file written with it (a European ';' CSV), which no column name would match."""
    if len(df.columns) != 1:
        return
    header = str(df.columns[0])
    for other in (";", "\t", "|", ","):
        if other != sep and other in header:
            raise SchemaError(None, f"cannot read {path}: its header {header[:60]!r} is one "
                              f"column; the file looks {other!r}-separated: write it with "
                              f"{sep!r} separators (and '.' decimals), e.g. pd.read_csv(path, "
                              f"sep={other!r}, decimal=',').to_csv(new_path, index=False)")


def _read_parquet(path: Path, compression: str | None) -> pd.DataFrame:
    if compression is None:
        return _index_as_columns(pd.read_parquet(path))
    import io

    from pandas.io.common import get_handle  # pandas' own decompressors, as read_csv uses
    try:
        with get_handle(path, "rb", compression=compression, is_text=False) as handle:
            data = handle.handle.read()
        return _index_as_columns(pd.read_parquet(io.BytesIO(data)))
    except (OSError, EOFError, ValueError) as exc:
        raise SchemaError(None, f"cannot read {path} as {compression}-compressed parquet: {exc}") from None
