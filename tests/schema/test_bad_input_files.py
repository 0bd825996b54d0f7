"""Errors a user can read and files read rightly (issue 26, class 7): compressed logs are
recognised by all their suffixes, refutations of a nullable treatment holding <NA> name the
column, and the command line reads a compressed TSV."""
import bz2
import gzip
import lzma
import re

import numpy as np
import pandas as pd
import pytest
import zstandard
from test_bad_input import ROLES, small_log

import causalrec as cr
from causalrec.cli import main
from causalrec.schema import SchemaError, read_log

COMPRESS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress,
            ".zst": zstandard.ZstdCompressor().compress}


def frame():
    return pd.DataFrame({"item": ["a", "b", "a,b"], "t": [1, 0, 1], "y": [0.5, 1.0, 2.0],
                         "note": ["x\ty", "plain", "z"]})


def encoded(df, fmt) -> bytes:
    if fmt == ".parquet":
        return df.to_parquet()
    sep = "\t" if fmt in (".tsv", ".tab") else ","
    return df.to_csv(sep=sep, index=False).encode()


@pytest.mark.parametrize("fmt", [".csv", ".tsv", ".parquet"])
@pytest.mark.parametrize("compression", ["", ".gz", ".bz2", ".xz", ".zst"])
def test_compressed_logs_are_read_by_all_their_suffixes(tmp_path, fmt, compression):
    df = frame() if fmt != ".tsv" else frame().assign(note=["x y", "plain", "z"])
    data = encoded(df, fmt)
    path = tmp_path / f"log{fmt}{compression}"
    path.write_bytes(COMPRESS[compression](data) if compression else data)
    pd.testing.assert_frame_equal(read_log(path), df)


def test_suffixes_are_case_blind_and_a_bare_gz_is_a_csv(tmp_path):
    df = frame()
    (tmp_path / "LOG.TSV.GZ").write_bytes(gzip.compress(encoded(df, ".tsv")))
    (tmp_path / "log.2024.gz").write_bytes(gzip.compress(encoded(df, ".csv")))
    pd.testing.assert_frame_equal(read_log(tmp_path / "LOG.TSV.GZ"), df)
    pd.testing.assert_frame_equal(read_log(tmp_path / "log.2024.gz"), df)


def test_a_file_that_is_not_what_its_suffixes_say_is_a_one_line_error(tmp_path):
    text = gzip.compress(encoded(frame(), ".csv"))
    (tmp_path / "log.parquet.gz").write_bytes(text)
    with pytest.raises(SchemaError, match="as gzip-compressed parquet"):
        read_log(tmp_path / "log.parquet.gz")
    (tmp_path / "log.csv.gz").write_bytes(encoded(frame(), ".csv"))  # not compressed
    with pytest.raises(SchemaError, match="cannot read .*log.csv.gz as gzip csv"):
        read_log(tmp_path / "log.csv.gz")
    (tmp_path / "log.json.gz").write_bytes(text)
    with pytest.raises(SchemaError, match="expected a .csv or .parquet file"):
        read_log(tmp_path / "log.json.gz")


def test_command_line_reads_a_compressed_tsv(tmp_path, capsys):
    df = small_log(0)
    path = tmp_path / "log.tsv.gz"
    path.write_bytes(gzip.compress(df.to_csv(sep="\t", index=False).encode()))
    out = tmp_path / "effects.csv"
    argv = ["effects", str(path), "--item", "item", "--treatment", "t", "--outcome", "y",
            "--confounders", "x1,x2", "--categorical", "c", "--out", str(out), "-q"]
    assert main(argv) == 0, capsys.readouterr().err
    effects = pd.read_csv(out)
    assert effects["item"].tolist() == sorted(df["item"].unique())


def test_command_line_error_for_a_mislabelled_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "log.parquet.gz"
    path.write_bytes(gzip.compress(small_log(0).to_csv(index=False).encode()))
    out = tmp_path / "effects.csv"
    argv = ["effects", str(path), "--item", "item", "--treatment", "t", "--outcome", "y",
            "--out", str(out), "-q"]
    assert main(argv) == 2  # bad input (the CLI's exit codes)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "as gzip-compressed parquet" in err[0] and "Traceback" not in err[0]
    assert not out.exists()


@pytest.mark.parametrize("column,dtype", [("t", "Int64"), ("t", "boolean"), ("y", "Float64"),
                                          ("x1", "Float64")])
def test_refutation_with_a_nullable_column_holding_na_names_it(column, dtype):
    df = small_log(1)
    df[column] = df[column].astype(dtype)
    df.loc[df.index[[2, 9]], column] = pd.NA
    with pytest.raises(SchemaError, match=f"column '{column}': 2 (missing|NaN)"):
        cr.refute_item_effects(df, **ROLES, checks=["placebo"])


def test_refutation_with_a_repeated_treatment_column_names_it():
    df = small_log(2)
    with pytest.raises(SchemaError, match="column 't': appears 2 times"):
        cr.refute_item_effects(pd.concat([df, df[["t"]]], axis=1), **ROLES, checks=["placebo"])
    assert np.isfinite(cr.refute_item_effects(df.assign(t=df["t"].astype("Int64")), **ROLES,
                                              checks=["placebo"])["estimate"]).any()


def test_an_empty_csv_names_the_file(tmp_path, capsys):
    # was: pandas' "No columns to parse from file", naming neither the file nor the problem
    (tmp_path / "log.csv").write_bytes(b"")
    with pytest.raises(SchemaError, match=r"cannot read .*log.csv: the file is empty"):
        read_log(tmp_path / "log.csv")
    argv = ["effects", str(tmp_path / "log.csv"), "--item", "item", "--treatment", "t",
            "--outcome", "y", "--out", str(tmp_path / "e.csv"), "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the file is empty" in err[0]


def test_command_line_keeps_zero_padded_ids_apart(tmp_path, capsys):
    # was: pandas read "007" and "7" as the number 7, so four items became two, silently
    df = small_log(0, n_items=2, rows=(60, 61))
    df["item"] = np.where(df.index % 2 == 0, df["item"].map({"i0": "007", "i1": "0042"}),
                          df["item"].map({"i0": "7", "i1": "42"}))
    df["c"] = df["c"].map({"a": "01", "b": "1", "c": "2"})
    path, out = tmp_path / "log.csv", tmp_path / "effects.csv"
    df.to_csv(path, index=False)
    read = read_log(path, ids=["item", "c", "absent"])
    assert sorted(read["item"].unique()) == ["0042", "007", "42", "7"]
    assert read["c"].value_counts().to_dict() == df["c"].value_counts().to_dict()
    argv = ["effects", str(path), "--item", "item", "--treatment", "t", "--outcome", "y",
            "--confounders", "x1", "--categorical", "c", "--out", str(out), "-q"]
    assert main(argv) == 0, capsys.readouterr().err
    assert sorted(pd.read_csv(out, dtype={"item": str})["item"]) == ["0042", "007", "42", "7"]


def test_ids_read_as_text_are_integers_where_nothing_is_lost(tmp_path):
    df = pd.DataFrame({"item": [7, 42, -3, 0], "unit": ["5", "1e3", "-0", "0"], "t": [0, 1, 0, 1]})
    df.to_csv(tmp_path / "log.csv", index=False)
    read = read_log(tmp_path / "log.csv", ids=["item", "unit"])
    assert read["item"].dtype == np.int64 and read["item"].tolist() == [7, 42, -3, 0]
    assert read["unit"].tolist() == ["5", "1e3", "-0", "0"]  # not how 1000 or 0 print
    assert read["t"].dtype == np.int64  # other columns as pandas reads them


def test_a_parquet_log_saved_with_its_ids_as_index_reads_them_as_columns(tmp_path):
    # was: read_parquet restored the index, and --item item was "missing from the log"
    df = small_log(0)
    df.set_index(["item", "c"]).to_parquet(tmp_path / "log.parquet")
    read = read_log(tmp_path / "log.parquet")
    pd.testing.assert_frame_equal(read[df.columns], df)
    with pytest.raises(SchemaError, match=r"column 'item': .*level of the index: .*reset_index"):
        cr.InteractionLog(df.set_index("item"), **ROLES)


@pytest.mark.parametrize("sep", [";", "|"])
def test_a_csv_with_another_separator_is_named_with_its_separator(tmp_path, sep):
    # was: one column named 'item;t;y;...', then "column 'item': missing from the log"
    small_log(0).to_csv(tmp_path / "log.csv", sep=sep, index=False)
    with pytest.raises(SchemaError, match=f"log.csv: its header 'item{re.escape(sep)}t.* is one "
                       f"column; the file looks '{re.escape(sep)}'-separated"):
        read_log(tmp_path / "log.csv")


def test_a_repeated_csv_header_is_refused_for_a_role_and_harmless_elsewhere(tmp_path):
    # was: pandas renamed the copies "x1", "x1.1" and the role x1 silently took the first
    df = small_log(0)
    text = df.to_csv(index=False).replace("x2", "x1", 1)
    (tmp_path / "log.csv").write_text(text)
    read = read_log(tmp_path / "log.csv")
    assert read.columns.tolist() == ["item", "t", "y", "x1", "x1", "c"]
    with pytest.raises(SchemaError, match="column 'x1': appears 2 times"):
        cr.InteractionLog(read, **dict(ROLES, confounders=["x1"]))
    cr.InteractionLog(read, **dict(ROLES, confounders=[]))  # copies outside the roles
    (tmp_path / "dotted.csv").write_text(df.rename(columns={"x2": "x1.1"}).to_csv(index=False))
    assert read_log(tmp_path / "dotted.csv").columns[4] == "x1.1"  # a real name stays


def test_a_csv_written_with_spaces_after_its_commas_reads_as_the_plain_one(tmp_path):
    # was: columns " t", " y", ... which the command line's --confounders (stripped of
    # spaces) could never name
    df = small_log(0)
    (tmp_path / "log.csv").write_text(df.to_csv(index=False).replace(",", ", "))
    pd.testing.assert_frame_equal(read_log(tmp_path / "log.csv"), df)
