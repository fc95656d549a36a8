"""Arrow tables as IPC stream bytes: the one form a table takes between processes (HTTP bodies, Ray calls).

Pickling a `pyarrow.Table` rebuilds it column by column through Python (~600 µs for 29 columns of 8 rows here,
and more under cloudpickle); an IPC stream is written and read in one call each (~50 µs).
"""

from __future__ import annotations

import pyarrow as pa


def to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes | pa.Buffer) -> pa.Table:
    """The table in `data`; raises pyarrow's error when it is not an IPC stream."""
    with pa.ipc.open_stream(pa.py_buffer(data) if isinstance(data, bytes) else data) as reader:
        return reader.read_all()
