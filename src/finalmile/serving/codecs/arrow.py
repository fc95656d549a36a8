"""Apache Arrow IPC streams (`application/vnd.apache.arrow.stream`): no parsing, no copies of the column data."""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa

from finalmile.arrow.frames import require_rows
from finalmile.arrow.ipc import from_ipc, to_ipc
from finalmile.errors import InvalidInputError
from finalmile.serving.codecs.base import ARROW_STREAM, Answer, Decoded


def decode(body: bytes) -> pa.Table:
    try:
        return require_rows(from_ipc(body))
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInputError(f"not an Arrow IPC stream: {exc}") from None


def encode(table: pa.Table) -> bytes:
    return to_ipc(table)


class ArrowCodec:
    """Arrow IPC stream in, Arrow IPC stream out: the column buffers pass through untouched."""

    content_type = ARROW_STREAM

    def decode(self, body: bytes, headers: Mapping[str, str]) -> Decoded:
        return Decoded(decode(body))

    def encode(self, answer: Answer, decoded: Decoded) -> tuple[bytes, dict[str, str]]:
        return encode(answer.table), {"content-type": self.content_type}
