"""Apache Arrow IPC streams (`application/vnd.apache.arrow.stream`): no parsing, no copies of the column data."""

from __future__ import annotations

import pyarrow as pa

from finalmile.errors import InvalidInputError
from finalmile.serving.codecs import require_rows


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
