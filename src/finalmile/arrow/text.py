"""Arrow columns made fit for a text format that cannot hold them as they are. A SQL result over the log may hold
any type DuckDB has; Arrow's CSV writer refuses nesting, bytes that are not UTF-8, intervals and unions, and JSON
(through pandas) refuses all but the nesting. Each such column becomes text instead of a 500. `plain` says which
types a column may hold when no schema fixes its type and it is logged as sent."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from finalmile.arrow.frames import list_matrix


def csv_bytes(table: pa.Table) -> bytes:
    """The table as CSV text (see `csv_ready`), for a download or a terminal."""
    buffer = io.BytesIO()
    pcsv.write_csv(csv_ready(table), buffer)
    return buffer.getvalue()


def csv_ready(table: pa.Table) -> pa.Table:
    """`table` with every column CSV can hold: a tensor column `p` of width k becomes columns p_0 … p_{k-1} (a list
    column read back from Parquet by DuckDB too, when its rows are all k long); any other list, a struct or a map
    becomes each row's JSON; the rest as `json_ready` makes it."""
    columns: dict[str, pa.Array | pa.ChunkedArray] = {}
    for name, col in zip(table.column_names, table.columns, strict=True):
        kind = col.type
        if pa.types.is_list(kind) or pa.types.is_large_list(kind):
            lengths = pc.unique(pc.list_value_length(col)).to_pylist()
            if len(lengths) == 1 and lengths[0] is not None and col.null_count == 0:
                kind = pa.list_(kind.value_type, lengths[0])
                col = pc.cast(col, kind)
        if pa.types.is_fixed_size_list(kind) and _is_number(kind.value_type):
            matrix = list_matrix(col)
            for i in range(matrix.shape[1]):
                columns[f"{name}_{i}"] = pa.array(matrix[:, i])
        elif _scalar(kind):
            columns[name] = col
        else:
            columns[name] = _as_text(col)
    return pa.table(columns)


def json_ready(table: pa.Table) -> pa.Table:
    """`table` with every column pandas can write as JSON: lists, structs and maps of plain values stay nested; bytes
    become text when they are UTF-8 and hex when not; an interval, a union or a type only DuckDB knows becomes text."""
    if all(_nests_scalars(f.type) for f in table.schema):
        return table
    return pa.table(
        {
            n: c if _nests_scalars(c.type) else _as_text(c)
            for n, c in zip(table.column_names, table.columns, strict=True)
        }
    )


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)


def plain(kind: pa.DataType) -> bool:
    """Text, a number or a boolean (or nulls): any two of these read back from Parquet as one column in DuckDB, so
    a column whose type no schema fixes may hold them (a date after a number, or a list after text, would fail)."""
    if pa.types.is_dictionary(kind):
        return plain(kind.value_type)
    return (
        pa.types.is_null(kind)
        or _is_number(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
    )


def _scalar(kind: pa.DataType) -> bool:
    """A value both CSV and JSON write as it is."""
    if pa.types.is_dictionary(kind):
        return _scalar(kind.value_type)
    return plain(kind) or (pa.types.is_temporal(kind) and not pa.types.is_interval(kind))


def _nests_scalars(kind: pa.DataType) -> bool:
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _nests_scalars(kind.value_type)
    if pa.types.is_struct(kind):
        return all(_nests_scalars(kind.field(i).type) for i in range(kind.num_fields))
    if pa.types.is_map(kind):
        return _nests_scalars(kind.key_type) and _nests_scalars(kind.item_type)
    return _scalar(kind)


def _as_text(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    return pa.array([None if v is None else _text(v) for v in col.to_pylist()], pa.string())


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):  # bytes, and the types only DuckDB knows (their Arrow storage)
        return _decoded(value)
    if isinstance(value, pa.MonthDayNano):  # MonthDayNano(months=0, days=1, nanoseconds=0), not JSON's [0, 1, 0]
        return str(value)
    return json.dumps(value, default=_json_default)


def _decoded(value: bytes) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value.hex()


def _json_default(value: object) -> str:
    return _decoded(value) if isinstance(value, bytes) else str(value)
