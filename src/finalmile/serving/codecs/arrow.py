"""Apache Arrow IPC streams (`application/vnd.apache.arrow.stream`): no parsing, no copies of the column data."""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa

from finalmile.arrow.frames import require_rows
from finalmile.errors import InvalidInputError
from finalmile.serving.codecs.base import ARROW_STREAM, Answer, Decoded


def decode(body: bytes) -> pa.Table:
    try:
        with pa.ipc.open_stream(pa.py_buffer(body)) as reader:
            return require_rows(reader.read_all())
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInputError(f"not an Arrow IPC stream: {exc}") from None


def encode(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


class ArrowCodec:
    """Arrow IPC stream in, Arrow IPC stream out: the column buffers pass through untouched."""

    content_type = ARROW_STREAM

    def decode(self, body: bytes, headers: Mapping[str, str]) -> Decoded:
        return Decoded(decode(body))

    def encode(self, answer: Answer, decoded: Decoded) -> tuple[bytes, dict[str, str]]:
        return encode(answer.table), {"content-type": self.content_type}
