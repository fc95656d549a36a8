"""The journal: an append-only Arrow IPC stream per pipeline, fsynced by descriptor, each batch carrying the CRC-32
of its serialised form in its custom metadata.

Read back, a journal is every batch whose check holds. A torn tail (the last batch, half written when the process
died) is skipped and reported. Anything else that fails (a batch whose bytes changed, a broken message in the middle)
is corruption, never a tail: the journal is read on past it, batch by verified batch from the next message marker,
and the caller sets the file aside (`LogWriter.recover`) instead of deleting it. Journals written before the check
existed carry none and are taken as they are.
"""

from __future__ import annotations

import os
import time
import zlib
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
        for batch in table.to_batches():
            self.writer.write_batch(batch, custom_metadata={CHECK: checksum(batch)})
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


CHECK = b"crc32"
_MARKER = b"\xff\xff\xff\xff"  # every IPC message after the first starts with it


def checksum(batch: pa.RecordBatch) -> bytes:
    """The CRC-32 of the batch's IPC serialisation and of its dictionaries' values (a dictionary travels in a
    message of its own): deterministic, a batch read back serialises the same."""
    crc = zlib.crc32(batch.serialize())
    for column in batch.columns:
        if pa.types.is_dictionary(column.type):
            crc = zlib.crc32(pa.record_batch([column.dictionary], names=["d"]).serialize(), crc)
    return str(crc).encode()


@dataclass
class JournalRead:
    """What a journal held: its verified rows, the bytes of a torn tail, and any corruption found."""

    table: pa.Table
    torn: int = 0
    corrupt_at: int | None = None
    """The byte offset of the first record that failed its check (None: none did)."""
    salvaged: int = 0
    """Rows recovered after the corruption."""


def read_journal(path: Path) -> JournalRead:
    """Every verified batch of a journal (memory-mapped, read without a copy), and what was torn or corrupt."""
    size = path.stat().st_size
    data = pa.memory_map(str(path)).read_buffer()
    try:
        reader = pa.ipc.open_stream(data)
    except (pa.ArrowInvalid, OSError):  # died before even the schema was written
        return JournalRead(pa.table({}), torn=size)
    batches: list[pa.RecordBatch] = []
    failed = False
    while True:
        try:
            batch, metadata = reader.read_next_batch_with_custom_metadata()
        except StopIteration:
            break
        except (pa.ArrowInvalid, OSError):
            failed = True
            break
        if not _holds(batch, metadata):
            failed = True
            break
        batches.append(batch)
    if not failed:
        return JournalRead(pa.Table.from_batches(batches, schema=reader.schema))
    offset = _offset_after(data, len(batches))
    rest = _salvage(data, offset, len(batches))
    table = pa.Table.from_batches(batches + rest, schema=reader.schema)
    if not rest and _torn_at(data, offset):
        return JournalRead(table, torn=size - offset)
    return JournalRead(table, corrupt_at=offset, salvaged=sum(b.num_rows for b in rest))


def _holds(batch: pa.RecordBatch, metadata: pa.KeyValueMetadata | None) -> bool:
    expected = metadata.get(CHECK) if metadata is not None else None
    return expected is None or expected == checksum(batch)


def _offset_after(data: pa.Buffer, batches: int) -> int:
    """Where the stream's schema and its first `batches` record batches (their dictionaries among them) end."""
    reader = pa.BufferReader(data)
    pa.ipc.read_message(reader)  # the schema
    for _ in range(batches):
        while pa.ipc.read_message(reader).type != "record batch":
            pass
    return int(reader.tell())


def _torn_at(data: pa.Buffer, offset: int) -> bool:
    """Whether the record at `offset` (a batch and the dictionaries before it) is half written: it runs past the
    end of the file."""
    reader = pa.BufferReader(data.slice(offset))
    try:
        while (message := pa.ipc.read_message(reader)) is not None and message.type == "dictionary":
            pass
    except (pa.ArrowInvalid, OSError) as exc:  # "Expected to read 264 metadata bytes, but only read 248"
        return "Expected to" in str(exc) and "read" in str(exc)
    return False


def _salvage(data: pa.Buffer, good: int, batches: int) -> list[pa.RecordBatch]:
    """The verified batches after a corrupt record. The good part (the first `good` bytes: the schema, `batches`
    batches and every dictionary they brought) is joined to the bytes from each later message marker, and the
    batches read on from there are kept while their checks hold; a marker inside a value, or a batch whose own
    dictionary was lost, fails its check. A second corrupt record is passed the same way."""
    raw = data.to_pybytes()  # a copy, only for a journal found corrupt
    found: list[pa.RecordBatch] = []
    prefix = raw[:good]
    position = raw.find(_MARKER, good + 1)
    while position >= 0:
        joined = prefix + raw[position:]
        read = _verified(pa.py_buffer(joined), batches)
        if not read:
            position = raw.find(_MARKER, position + 1)
            continue
        found += read
        end = _offset_after(pa.py_buffer(joined), batches + len(read))
        stopped = position + (end - len(prefix))  # where the read stopped, in the journal's own bytes
        prefix, batches = joined[:end], batches + len(read)
        position = raw.find(_MARKER, stopped + 1)
    return found


def _verified(stream: pa.Buffer, skip: int) -> list[pa.RecordBatch]:
    """The batches of `stream` after its first `skip`, up to the first that fails to read or to check."""
    read: list[pa.RecordBatch] = []
    try:
        reader = pa.ipc.open_stream(stream)
        for _ in range(skip):
            reader.read_next_batch()
        while True:
            batch, metadata = reader.read_next_batch_with_custom_metadata()
            if metadata is None or metadata.get(CHECK) != checksum(batch):
                break
            read.append(batch)
    except (pa.ArrowInvalid, OSError, StopIteration, ValueError):
        pass
    return read


CORRUPT = "_corrupt"
"""The folder under the log root where unreadable journals and Parquet parts are set aside, kept for a person."""


def set_aside(root: Path, path: Path) -> str:
    """Move a journal or a log part that failed its check into `root/_corrupt/`; its name there."""
    folder = root / CORRUPT
    folder.mkdir(exist_ok=True)
    where = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
    name = f"{time.strftime('%Y%m%dT%H%M%S')}-{'-'.join(where.parts)}".replace("=", "_")  # its pipeline and day
    os.replace(path, folder / name)
    return name


def set_aside_files(root: Path) -> list[str]:
    """What is set aside under `root` (`/metrics` counts it, the health endpoint names it)."""
    folder = root / CORRUPT
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def journal_column(journals: Path, pipeline: str, column: str) -> list[pa.ChunkedArray]:
    """`column` of every row the journals in `journals` hold for `pipeline`, whichever process writes them: rows on
    disk that no Parquet part holds yet. A journal compacted meanwhile is gone, and its part in place (renamed
    before the journal is removed), so read journals before listing parts, and a row is in one or the other."""
    found = []
    for path in journals.glob("*.arrows"):
        if journal_owner(path)[0] != pipeline:
            continue
        try:
            table = read_journal(path).table
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
