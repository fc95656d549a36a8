"""The journal: an append-only Arrow IPC stream per pipeline, fsynced by descriptor, read back up to a torn tail."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa


@dataclass
class Journal:
    """One open journal file: the IPC stream writer over a buffered native file, and the rows written."""

    path: Path
    raw: pa.OSFile
    file: pa.BufferedOutputStream
    writer: pa.ipc.RecordBatchStreamWriter
    schema: pa.Schema
    rows: int = 0

    def append(self, table: pa.Table) -> None:
        self.writer.write_table(table)
        self.rows += table.num_rows

    def sync(self) -> None:
        self.file.flush()
        os.fsync(self.raw.fileno())

    def close(self) -> None:
        self.writer.close()
        self.sync()
        self.file.close()


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def process_alive(pid: int) -> bool:
    """Whether process `pid` may still write its journals. An exited process not yet reaped (a zombie: a server's
    worker whose supervisor was killed, under an init that does not reap, as in many containers) has closed its
    files: it counts as gone, or its journals would wait for a reaping that never comes."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs (macOS): the signal's answer is all there is
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")  # the state follows the name, which may hold ")"


def read_journal(path: Path) -> tuple[pa.Table, int]:
    """Every complete batch of a journal, and how many trailing bytes (a torn, half-written batch) were skipped.

    The journal is memory-mapped, so its batches are read without a copy."""
    size = path.stat().st_size
    try:
        reader = pa.ipc.open_stream(pa.memory_map(str(path)))
    except (pa.ArrowInvalid, OSError):  # died before even the schema was written
        return pa.table({}), size
    batches: list[pa.RecordBatch] = []
    torn = False
    while True:
        try:
            batches.append(reader.read_next_batch())
        except StopIteration:
            break
        except (pa.ArrowInvalid, OSError):
            torn = True
            break
    table = pa.Table.from_batches(batches, schema=reader.schema)
    return table, (size - _stream_size(reader.schema, batches)) if torn else 0


def _stream_size(schema: pa.Schema, batches: list[pa.RecordBatch]) -> int:
    """Bytes the schema and these batches take in a stream (IPC serialisation is deterministic)."""
    sink = pa.BufferOutputStream()
    writer = pa.ipc.new_stream(sink, schema)
    for batch in batches:
        writer.write_batch(batch)
    return int(sink.tell())


def journal_column(journals: Path, pipeline: str, column: str) -> list[pa.ChunkedArray]:
    """`column` of every row the journals in `journals` hold for `pipeline`, whichever process writes them: rows on
    disk that no Parquet part holds yet. A journal compacted meanwhile is gone, and its part in place (renamed
    before the journal is removed), so read journals before listing parts, and a row is in one or the other."""
    found = []
    for path in journals.glob("*.arrows"):
        if journal_owner(path)[0] != pipeline:
            continue
        try:
            table, _ = read_journal(path)
        except FileNotFoundError:
            continue
        if column in table.column_names:
            found.append(table.column(column))
    return found


def journal_owner(path: Path) -> tuple[str, int]:
    """The pipeline and the process id a journal's name gives (`PIPELINE--PID-HEX.arrows`; a pipeline's name may
    hold `--` itself, the rest never does); -1 for a name without a process id."""
    pipeline, _, rest = path.name.rpartition("--")
    pid = rest.split("-")[0]
    return pipeline, int(pid) if pid.isdigit() else -1
