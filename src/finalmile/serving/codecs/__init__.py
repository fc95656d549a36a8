"""Wire formats at the edge: each codec turns bytes into an Arrow table and a result back into bytes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from finalmile.errors import InvalidInputError

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
        k = t.list_size
        # .values ignores a slice's offset: take the window of this slice ourselves
        values = arr.values.slice(arr.offset * k, len(arr) * k).to_numpy(zero_copy_only=False)
        return values, [len(arr), k]
    if t.id in _STRINGS:
        return np.asarray(arr.to_pylist(), dtype=object), [len(arr)]
    return arr.to_numpy(zero_copy_only=False), [len(arr)]


_FIXED_SIZE_LIST = pa.list_(pa.float64(), 1).id
_STRINGS = {pa.string().id, pa.large_string().id}


def require_rows(table: pa.Table) -> pa.Table:
    if table.num_rows == 0:
        raise InvalidInputError("empty batch: the request has no rows")
    return table
