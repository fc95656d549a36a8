"""Reading and writing tabular files (CSV, Parquet, JSON lines) for the CLI, chosen by extension."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from finalmile.errors import InvalidInputError
from finalmile.frames import list_matrix

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
    path = Path(path)
    fmt = file_format(path)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        if fmt == "csv":
            pcsv.write_csv(_flatten_tensors(table), tmp)
        elif fmt == "parquet":
            pq.write_table(table, tmp)
        else:
            _write_jsonl(table, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_jsonl(table: pa.Table, path: Path) -> None:
    import json

    with path.open("w") as f:
        for row in table.to_pylist():
            f.write(json.dumps(row, default=str) + "\n")


def _flatten_tensors(table: pa.Table) -> pa.Table:
    """CSV has no lists: a tensor column `p` of width k becomes columns p_0 … p_{k-1}."""
    columns: dict[str, pa.Array] = {}
    for name, col in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_fixed_size_list(col.type):
            matrix = list_matrix(col)
            for i in range(matrix.shape[1]):
                columns[f"{name}_{i}"] = pa.array(matrix[:, i])
        else:
            columns[name] = col
    return pa.table(columns)
