"""Ground truth: labels that arrive later, stored as Parquet and joined to the log in SQL.

Labels are keyed by the `request_id` the server returned, or by an input column the pipeline logs (a transaction
id, say: matched against `in_<column>`). Every upload is kept; the `ground_truth` view shows the newest label per
key, so a corrected label simply wins.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from finalmile.arrow.frames import to_arrow
from finalmile.errors import InvalidInputError
from finalmile.logs.query import LogReader


@dataclass
class GroundTruthReceipt:
    """What an upload of labels did: rows received, keys found in the log, keys not (yet) found."""

    received: int
    matched: int
    unknown: int
    """Keys not (yet) found in the log: stored all the same, reported so a wrong key column shows at once."""


def add_ground_truth(reader: LogReader, pipeline: str, frame: Any, key: str = "request_id") -> GroundTruthReceipt:
    """Store labels for a pipeline's logged rows (every upload kept; the newest label per key wins in SQL)."""
    reader.pipelines.get_version(pipeline)  # labels for a pipeline that does not exist are a 404, not a new folder
    try:
        table = frame if isinstance(frame, pa.Table) else to_arrow(frame)[0]
    except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
        raise InvalidInputError(f"ground truth: the labels do not form a table: {exc}") from None
    if key not in table.column_names:
        raise InvalidInputError(
            f"ground truth: column '{key}' (the key) is missing; have {', '.join(table.column_names)}"
        )
    inputs = reader.input_columns(pipeline) if key != "request_id" else set()
    if key != "request_id" and f"in_{key}" not in inputs:
        logged = sorted(c.removeprefix("in_") for c in inputs)
        raise InvalidInputError(
            f"key: pipeline '{pipeline}' logs no input column '{key}' to match labels on; use request_id or one of "
            f"{', '.join(logged) or '(none yet)'}",
            {"field": "key"},
        )
    labels = [c for c in table.column_names if c != key]
    if not labels:
        raise InvalidInputError("ground truth: no label columns beside the key")
    if table.num_rows == 0:
        return GroundTruthReceipt(0, 0, 0)
    try:
        keys = pc.cast(table.column(key), pa.string())
    except (pa.ArrowException, ValueError) as exc:
        raise InvalidInputError(f"ground truth: key column '{key}' cannot be read as text: {exc}") from None
    stored = pa.table(
        {"key": keys, "key_column": pa.array([key if key == "request_id" else f"in_{key}"] * table.num_rows)}
        | {c: table.column(c) for c in labels}
        | {"received_at": pa.array([time.time_ns() // 1000] * table.num_rows).cast(pa.timestamp("us", tz="UTC"))}
    )
    directory = reader.home / "ground_truth" / f"pipeline={pipeline}"
    directory.mkdir(parents=True, exist_ok=True)
    name = f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
    incoming = directory / f".{name}.tmp"
    try:
        try:
            pq.write_table(stored, incoming)
        except (pa.ArrowException, ValueError, TypeError, UnicodeError) as exc:
            raise InvalidInputError(f"ground truth: these labels cannot be stored: {exc}") from None
        _readable_with_earlier(directory, incoming, labels)
    except BaseException:
        incoming.unlink(missing_ok=True)
        raise
    os.replace(incoming, directory / name)
    column = "request_id" if key == "request_id" else f"in_{key}"
    with reader.connection() as conn:
        conn.register("incoming", pa.table({"key": keys}))
        try:
            same = key_matches(f'l."{column}"', logged_types(conn).get(column), "i.key")
            matched = conn.execute(
                f"SELECT count(DISTINCT i.key) FROM incoming i JOIN logs l ON {same} WHERE l.pipeline = ?",
                [pipeline],
            ).fetchone()
        except Exception:  # the log has no such column (yet): nothing matches
            matched = (0,)
    distinct = len(set(keys.to_pylist()))
    found = int(matched[0]) if matched else 0
    return GroundTruthReceipt(table.num_rows, found, distinct - found)


def _readable_with_earlier(directory: Path, incoming: Path, labels: list[str]) -> None:
    """Refuse labels whose column DuckDB cannot read together with the same column of this pipeline's earlier
    uploads (an integer label after struct ones, say): the `ground_truth` view reads every part as one table, so
    one such upload would fail every query of it and every performance monitor. Whether two columns unify depends
    on their types, so one earlier label per column (not null: a null unifies with anything) is read with the new
    upload, never the whole history."""
    if not any(directory.glob("*.parquet")):
        return
    earlier = f"read_parquet('{_quoted(directory / '*.parquet')}', union_by_name = true)"
    conn = duckdb.connect()
    try:
        try:
            names = conn.sql(f"SELECT * FROM {earlier} LIMIT 0").columns
            sample = {
                c: conn.sql(f'SELECT "{_ident(c)}" FROM {earlier} WHERE "{_ident(c)}" IS NOT NULL LIMIT 1')
                .to_arrow_table()
                .column(0)
                for c in labels
                if c in names
            }
        except duckdb.Error:  # the earlier labels cannot be read as they are: nothing to keep readable
            return
        sample = {c: v for c, v in sample.items() if len(v)}
        if not sample:
            return
        probe = directory / f".{incoming.stem}.types"
        pq.write_table(pa.table(sample), probe)
        try:
            both = f"read_parquet(['{_quoted(probe)}', '{_quoted(incoming)}'], union_by_name = true)"
            conn.sql(f"SELECT * FROM {both}").to_arrow_table()
        except duckdb.Error as exc:
            column = re.search(r'column "([^"]+)"', str(exc))
            field = column.group(1) if column and column.group(1) in sample else next(iter(sample))
            raise InvalidInputError(
                f"ground truth: label column '{field}' holds {_type_in(incoming, field)} here and "
                f"{sample[field].type} in this pipeline's earlier labels, which cannot be read as one column; "
                f"send {sample[field].type} labels, or name the column differently",
                {"field": field},
            ) from None
        finally:
            probe.unlink(missing_ok=True)
    finally:
        conn.close()


_NUMBERS = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "REAL", "DOUBLE"})


def is_number(kind: str) -> bool:
    """Whether a DuckDB type, as `DESCRIBE` names it, holds numbers."""
    return kind.removeprefix("U") in _NUMBERS or kind.startswith("DECIMAL")


def logged_types(conn: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Each column of the `logs` view and its DuckDB type."""
    return {row[0]: str(row[1]) for row in conn.execute("DESCRIBE logs").fetchall()}


def key_matches(value: str, kind: str | None, key: str = "g.key") -> str:
    """SQL true where a label's `key` (text) names a logged `value` of DuckDB type `kind`: every join of labels to
    the log uses it. A number is compared as a number, the key read as the column's type once per label, where the
    text of every logged value cost ~150 ms a million rows and kept the join from filtering the log's scan by the
    labels' keys ("1.50" names a logged 1.5); anything else as text."""
    if kind is not None and is_number(kind):
        return f"TRY_CAST({key} AS {kind}) = {value}"
    return f"{key} = CAST({value} AS VARCHAR)"


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")


def _ident(name: str) -> str:
    return name.replace('"', '""')


def _type_in(path: Path, column: str) -> pa.DataType | str:
    schema = pq.read_schema(path)
    return schema.field(column).type if column in schema.names else "absent"
