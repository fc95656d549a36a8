"""What every wire format shares: the `Codec` protocol, the decoded request, and a column as V2 values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from finalmile.arrow.frames import list_matrix

ARROW_STREAM = "application/vnd.apache.arrow.stream"


@dataclass
class Decoded:
    """A request body as Arrow, and whatever the codec needs again to encode the answer (V2: id, outputs)."""

    table: pa.Table
    request: Any = None


class Answer(Protocol):
    """What a codec encodes: the output rows and their provenance (a `RequestResult`)."""

    table: pa.Table
    pipeline: str
    version: int

    def metadata(self) -> dict[str, Any]: ...


class Codec(Protocol):
    """One wire format: bytes in to an Arrow table, the answer back to bytes and its headers."""

    content_type: str

    def decode(self, body: bytes, headers: Mapping[str, str]) -> Decoded: ...

    def encode(self, answer: Answer, decoded: Decoded) -> tuple[bytes, dict[str, str]]: ...


_FIXED_SIZE_LIST = pa.list_(pa.float64(), 1).id
_STRINGS = {pa.string().id, pa.large_string().id}


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
