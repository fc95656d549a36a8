"""What every wire format shares: the `Codec` protocol, the decoded request, and the answer it encodes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from finalmile.arrow.tensors import Rows

ARROW_STREAM = "application/vnd.apache.arrow.stream"


@dataclass
class Decoded:
    """A request body as Arrow, and whatever the codec needs again to encode the answer (V2: id, outputs)."""

    table: Rows
    request: Any = None


class Answer(Protocol):
    """What a codec encodes: the output rows and their provenance (a `RequestResult`)."""

    table: pa.Table
    pipeline: str
    version: int

    def metadata(self) -> dict[str, Any]: ...

    def output_names(self) -> list[str]:
        """The output columns, in order."""

    def tensor(self, name: str) -> tuple[np.ndarray, list[int], list[Any] | None]:
        """An output column as a tensor: its values flat (row-major), its shape, and the values as Python numbers
        where they print as they are, else None (`pipelines.loaded.OutputTensor`)."""

    def records(self) -> list[dict[str, Any]]:
        """The output rows as dicts."""


class Codec(Protocol):
    """One wire format: bytes in to an Arrow table, the answer back to bytes and its headers."""

    content_type: str

    def decode(self, body: bytes, headers: Mapping[str, str]) -> Decoded: ...

    def encode(self, answer: Answer, decoded: Decoded) -> tuple[bytes, dict[str, str]]: ...
