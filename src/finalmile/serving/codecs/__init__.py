"""Wire formats at the edge: each codec turns bytes into an Arrow table and a result back into bytes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from finalmile.errors import InvalidInputError
from finalmile.frames import list_matrix, tensor_array

ARROW_STREAM = "application/vnd.apache.arrow.stream"


def column_values(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, list[int]]:
    """A column as flat numpy values (a view where Arrow allows) and its V2 shape ([n] or [n, k]).

    On the response path of every request, so it avoids the generic (and slower) pyarrow helpers.
    """
    if isinstance(col, pa.ChunkedArray):
        arr = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    else:
        arr = col
    t = arr.type
    if t.id == _FIXED_SIZE_LIST:
        return list_matrix(arr).reshape(-1), [len(arr), t.list_size]
    if t.id in _STRINGS:
        return np.asarray(arr.to_pylist(), dtype=object), [len(arr)]
    return arr.to_numpy(zero_copy_only=False), [len(arr)]


_FIXED_SIZE_LIST = pa.list_(pa.float64(), 1).id
_STRINGS = {pa.string().id, pa.large_string().id}


NAMED_TENSOR = "__named_columns__"


def named_tensor(matrix: np.ndarray, names: list[str]) -> pa.Table:
    """Rows of k named numeric columns carried as one [n, k] tensor column; the names ride in its field metadata.

    The pipeline reorders it to the model's columns in one numpy indexing step (`LoadedPipeline.conform`), instead of
    building and validating k Arrow columns for every request.
    """
    field = pa.field(
        NAMED_TENSOR,
        pa.list_(pa.from_numpy_dtype(matrix.dtype), matrix.shape[1]),
        metadata={b"names": "\x1f".join(names).encode()},
    )
    return pa.Table.from_arrays([tensor_array(np.ascontiguousarray(matrix))], schema=pa.schema([field]))


def named_tensor_parts(table: pa.Table) -> tuple[np.ndarray, list[str]] | None:
    """(matrix, names) of a named tensor, or None for any other table."""
    if table.num_columns != 1:
        return None
    field = table.schema.field(0)
    if field.name != NAMED_TENSOR or not field.metadata:
        return None
    return list_matrix(table.column(0)), field.metadata[b"names"].decode().split("\x1f")


def expand_named_tensor(table: pa.Table) -> pa.Table:
    """A named tensor back as ordinary named columns (for the paths that need them)."""
    parts = named_tensor_parts(table)
    if parts is None:
        return table
    matrix, names = parts
    return pa.Table.from_arrays([pa.array(matrix[:, j]) for j in range(len(names))], names=names)


def require_rows(table: pa.Table) -> pa.Table:
    if table.num_rows == 0:
        raise InvalidInputError("empty batch: the request has no rows")
    return table
