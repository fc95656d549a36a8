"""Named tensors: k numeric columns carried as one [n, k] fixed-size-list column, their names in field metadata.

V2 clients send tabular rows as one tensor per feature; decoded into one matrix, the pipeline reorders it to the
model's columns in one numpy indexing step instead of building and validating k Arrow columns per request.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from finalmile.arrow.frames import list_matrix, tensor_array

NAMED_TENSOR = "__named_columns__"


def named_tensor(matrix: np.ndarray, names: list[str]) -> pa.Table:
    """Rows of k named numeric columns as one [n, k] tensor column named `NAMED_TENSOR`."""
    key = (matrix.dtype.str, tuple(names))
    schema = _SCHEMAS.get(key)
    if schema is None:  # clients send few distinct column lists: the schema is made once for each (~12 µs)
        if len(_SCHEMAS) >= _SCHEMAS_KEPT:
            _SCHEMAS.clear()
        field = pa.field(
            NAMED_TENSOR,
            pa.list_(pa.from_numpy_dtype(matrix.dtype), matrix.shape[1]),
            metadata={b"names": "\x1f".join(names).encode()},
        )
        schema = _SCHEMAS[key] = pa.schema([field])
    return pa.Table.from_arrays([tensor_array(np.ascontiguousarray(matrix))], schema=schema)


_SCHEMAS: dict[tuple[str, tuple[str, ...]], pa.Schema] = {}
_SCHEMAS_KEPT = 256


def named_tensor_header(table: pa.Table) -> bytes | None:
    """A named tensor's names as stored (joined by \\x1f), or None for any other table: cheap to compare."""
    if table.num_columns != 1:
        return None
    field = table.schema.field(0)
    if field.name != NAMED_TENSOR or not field.metadata:
        return None
    names: bytes | None = field.metadata.get(b"names")
    return names


def named_tensor_parts(table: pa.Table) -> tuple[np.ndarray, list[str]] | None:
    """(matrix, names) of a named tensor, or None for any other table."""
    header = named_tensor_header(table)
    if header is None:
        return None
    return list_matrix(table.column(0)), header.decode().split("\x1f")


def expand_named_tensor(table: pa.Table) -> pa.Table:
    """A named tensor back as ordinary named columns (for the paths that need them)."""
    parts = named_tensor_parts(table)
    if parts is None:
        return table
    matrix, names = parts
    return pa.Table.from_arrays([pa.array(matrix[:, j]) for j in range(len(names))], names=names)
