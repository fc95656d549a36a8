"""Wire formats at the edge: each codec turns bytes into an Arrow table and a result back into bytes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from finalmile.errors import InvalidInputError

ARROW_STREAM = "application/vnd.apache.arrow.stream"


def column_values(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, list[int]]:
    """A column as flat numpy values and its V2 shape ([n] or [n, k])."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_fixed_size_list(arr.type):
        values = arr.flatten().to_numpy(zero_copy_only=False)
        return values, [len(arr), arr.type.list_size]
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return np.asarray(arr.to_pylist(), dtype=object), [len(arr)]
    return arr.to_numpy(zero_copy_only=False), [len(arr)]


def require_rows(table: pa.Table) -> pa.Table:
    if table.num_rows == 0:
        raise InvalidInputError("empty batch: the request has no rows")
    return table
