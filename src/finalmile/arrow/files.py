"""Reading and writing tabular files (CSV, Parquet, JSON lines) for the CLI, chosen by extension."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from finalmile.arrow.text import csv_ready
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
            table = csv_ready(table)
        if self._writer is None:
            self._writer = (
                _parquet_writer(self._tmp, table.schema)
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


def _parquet_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """A Parquet writer for `schema`, or an `InvalidInputError` naming the columns Parquet has no type for (an
    interval, a union: a SQL result may hold them)."""
    try:
        return pq.ParquetWriter(path, schema, use_dictionary=dictionary_columns(schema))
    except pa.ArrowNotImplementedError:
        refused = [f for f in schema if not _parquet_holds(f)]
        named = ", ".join(f"'{f.name}' ({f.type})" for f in refused)
        raise InvalidInputError(
            f"Parquet has no type for column{'s' * (len(refused) > 1)} {named}: cast to VARCHAR in the SQL, "
            "or write .csv or .jsonl",
            {"columns": [f.name for f in refused]},
        ) from None


def _parquet_holds(field: pa.Field) -> bool:
    try:
        pq.ParquetWriter(io.BytesIO(), pa.schema([field])).close()
    except pa.ArrowNotImplementedError:
        return False
    return True
