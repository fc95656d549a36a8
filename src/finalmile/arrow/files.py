"""Reading and writing tabular files (CSV, Parquet, JSON lines) for the CLI, chosen by extension."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from finalmile.arrow.frames import list_matrix
from finalmile.errors import InvalidInputError

FORMATS = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


def file_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidInputError(f"{path}: unknown file type '{path.suffix}'; use .csv, .parquet or .jsonl")
    return fmt


def read_table(path: str | Path) -> pa.Table:
    """The whole file as an Arrow table, or an `InvalidInputError` naming the file and what was wrong."""
    path = Path(path)
    fmt = file_format(path)
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such file")
    try:
        if fmt == "csv":
            return pcsv.read_csv(path)
        if fmt == "parquet":
            return pq.read_table(path)
        return pjson.read_json(path)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise InvalidInputError(f"{path}: cannot read it as {fmt}: {exc}") from None


def write_table(table: pa.Table, path: str | Path) -> None:
    """Write atomically (temporary name, then rename) so a failed write leaves no partial file."""
    with TableWriter(path) as writer:
        writer.write(table)


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """Columns worth Parquet's dictionary encoding: text and small categories, never floats and tensors, where it
    finds nothing to share and makes writing about five times slower."""
    return [f.name for f in schema if not (pa.types.is_floating(f.type) or pa.types.is_fixed_size_list(f.type))]


def log_parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """Parquet settings for the inference log, which is encoded every second beside serving: dictionaries for text
    and small categories only (see `dictionary_columns`); statistics only for columns that are not float data (the
    min and max of a float feature almost never let a query skip a row group, and cost ~15% of the encoding); LZ4
    rather than snappy (~13% faster to encode here, and smaller); values handed to the column encoders 64K at a
    time instead of 1K (~12% faster)."""
    return {
        "use_dictionary": dictionary_columns(schema),
        "write_statistics": [f.name for f in schema if not _is_float_data(f.type)],
        "compression": "lz4",
        "write_batch_size": 65_536,
    }


def _is_float_data(arrow_type: pa.DataType) -> bool:
    return pa.types.is_floating(arrow_type) or (
        pa.types.is_fixed_size_list(arrow_type) and pa.types.is_floating(arrow_type.value_type)
    )


class TableWriter:
    """Streams tables into one CSV, Parquet or JSON-lines file with bounded memory; the file appears (renamed from
    a temporary name) only when the writer closes without an error."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.format = file_format(self.path)
        self._tmp = self.path.with_name(f".{self.path.name}.partial")
        self._writer: pq.ParquetWriter | pcsv.CSVWriter | None = None
        self._text: TextIO | None = None

    def write(self, table: pa.Table) -> None:
        if self.format == "jsonl":
            if self._text is None:
                self._text = self._tmp.open("w")
            for row in table.to_pylist():
                self._text.write(json.dumps(row, default=str) + "\n")
            return
        if self.format == "csv":
            table = _flatten_tensors(table)
        if self._writer is None:
            self._writer = (
                pq.ParquetWriter(self._tmp, table.schema, use_dictionary=dictionary_columns(table.schema))
                if self.format == "parquet"
                else pcsv.CSVWriter(self._tmp, table.schema)
            )
        self._writer.write_table(table)

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
            if self._text is not None:
                self._text.close()
            if kind is None:
                self._tmp.replace(self.path)
        finally:
            self._tmp.unlink(missing_ok=True)


def _flatten_tensors(table: pa.Table) -> pa.Table:
    """CSV has no lists: a tensor column `p` of width k becomes columns p_0 … p_{k-1} (a list column read back from
    Parquet by DuckDB too, when its rows are all k long; otherwise each row becomes its JSON text)."""
    columns: dict[str, pa.Array] = {}
    for name, col in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            lengths = pc.unique(pc.list_value_length(col)).to_pylist()
            if len(lengths) == 1 and lengths[0] is not None and col.null_count == 0:
                col = pc.cast(col, pa.list_(col.type.value_type, lengths[0]))
            else:
                columns[name] = pa.array([None if v is None else json.dumps(v) for v in col.to_pylist()], pa.string())
                continue
        if pa.types.is_fixed_size_list(col.type):
            matrix = list_matrix(col)
            for i in range(matrix.shape[1]):
                columns[f"{name}_{i}"] = pa.array(matrix[:, i])
        else:
            columns[name] = col
    return pa.table(columns)
