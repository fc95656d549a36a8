from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from finalmile.arrow.files import write_table
from finalmile.arrow.text import csv_bytes, json_ready
from finalmile.errors import InvalidInputError


def awkward() -> pa.Table:
    """What a SQL result over the log may hold and Arrow's CSV writer refuses, beside what it writes as is."""
    return duckdb.sql(
        "SELECT [0.5, 1.5]::DOUBLE[] AS p, {'a': 1, 'b': 'x'} AS s, map([1], ['one']) AS m,"
        " INTERVAL 1 DAY AS i, 'caf\\xC3\\xA9'::BLOB AS b, '\\xFF\\x00'::BLOB AS raw, union_value(k := 7) AS u,"
        " 2 AS n, 'text' AS t, TIMESTAMPTZ '2026-12-04 10:00:00+00' AS at"
    ).to_arrow_table()


def rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode())))


def test_every_column_a_sql_result_may_hold_reaches_the_csv() -> None:
    (row,) = rows(csv_bytes(awkward()))
    assert (row["p_0"], row["p_1"]) == ("0.5", "1.5")  # a tensor: a column per element, as DuckDB reads it back
    assert json.loads(row["s"]) == {"a": 1, "b": "x"}
    assert json.loads(row["m"]) == [[1, "one"]]
    assert "days=1" in row["i"]
    assert row["b"] == "café" and row["raw"] == "ff00"  # bytes: text when they are UTF-8, hex when not
    assert json.loads(row["u"]) == 7
    assert (row["n"], row["t"]) == ("2", "text")
    assert row["at"].startswith("2026-12-04 10:00:00")


def test_lists_of_several_lengths_and_nulls_stay_one_column_of_json() -> None:
    table = pa.table({"v": pa.array([[1.0], [2.0, 3.0], None]), "w": pa.array([None, [1], [2]])})
    out = rows(csv_bytes(table))
    assert [r["v"] for r in out] == ["[1.0]", "[2.0, 3.0]", ""]
    assert [r["w"] for r in out] == ["", "[1]", "[2]"]


def test_a_csv_file_is_written_the_same_way(tmp_path: Path) -> None:
    write_table(awkward(), tmp_path / "out.csv")
    (row,) = rows((tmp_path / "out.csv").read_bytes())
    assert row["p_1"] == "1.5" and json.loads(row["s"])["b"] == "x"
    assert datetime.fromisoformat(row["at"].replace("+0000", "+00:00")) == datetime(2026, 12, 4, 10, tzinfo=UTC)


def test_json_keeps_nesting_and_makes_text_of_what_it_cannot_write() -> None:
    table = awkward()
    (row,) = json.loads(json_ready(table).to_pandas().to_json(orient="records", date_format="iso"))
    assert row["p"] == [0.5, 1.5] and row["s"] == {"a": 1, "b": "x"} and row["m"] == [[1, "one"]]
    assert (row["b"], row["raw"], row["u"], row["n"]) == ("café", "ff00", "7", 2)
    assert "days=1" in row["i"]
    plain = table.select(["p", "s", "m", "n", "t", "at"])
    assert json_ready(plain) is plain  # nothing to convert: the table itself, no copy


def test_parquet_names_the_columns_it_has_no_type_for_and_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"columns 'i' \(month_day_nano_interval\), 'u' .*VARCHAR") as refused:
        write_table(awkward(), tmp_path / "out.parquet")
    assert refused.value.detail == {"columns": ["i", "u"]}
    assert list(tmp_path.iterdir()) == []
    write_table(awkward().drop_columns(["i", "u"]), tmp_path / "out.parquet")
    assert pq.read_table(tmp_path / "out.parquet").column("p").to_pylist() == [[0.5, 1.5]]
