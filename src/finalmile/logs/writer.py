"""The log writer: an append-only Arrow IPC journal per pipeline, compacted into hive-partitioned Parquet.

`fast` durability hands the batch to a background thread, which builds the log rows of the batches served since
whenever a piece's worth of rows (`piece_rows`) waits, and every `flush_interval_s` (1 s) builds the rest and puts
them on disk: a second of heavy traffic as a Parquet file of its own, anything lighter appended to the journal, which
is then synced (and compacted to Parquet every `compact_interval_s`). `strict` appends and fsyncs in the serving
thread before the response goes out.
Parquet files are written under a temporary name and renamed into `logs/pipeline=NAME/date=YYYY-MM-DD/`, so a
reader never sees a partial file. Journals left by a crash are compacted at start-up; a torn tail (the bytes of a
half-written batch) is skipped and reported, never fatal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from finalmile.arrow.files import log_parquet_options
from finalmile.logs.journal import Journal, fsync_path, journal_owner, process_alive, read_journal, set_aside
from finalmile.logs.records import PIECE_ROWS, Served, layout_runs, log_tables

if TYPE_CHECKING:
    from finalmile.pipelines.batch import Batch
    from finalmile.pipelines.loaded import LoadedPipeline

log = logging.getLogger(__name__)
_DAY_US = 86_400_000_000
_FAILURE_SCHEMA = pa.schema(
    [
        ("time", pa.timestamp("us", tz="UTC")),
        ("request_id", pa.string()),
        ("row", pa.int32()),
        ("pipeline_version", pa.int32()),
        ("latency_ms", pa.float64()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("rows", pa.int64()),
        ("variant", pa.string()),
    ]
)


@dataclass
class Recovery:
    """What start-up found in journals left behind: rows kept, torn tails skipped (path, bytes), and corrupt
    journals set aside (their file names under `_corrupt/`)."""

    rows: int = 0
    torn: list[tuple[str, int]] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)


class LogWriter:
    """Takes every served batch off the request path and puts it in the log within a second (or before the
    response, under `strict`); the one writer of this process's journals and Parquet parts."""

    def __init__(
        self,
        root: Path,
        flush_interval_s: float = 1.0,
        compact_interval_s: float = 10.0,
        max_journal_rows: int = 200_000,
        direct_rows: int = 50_000,
        piece_rows: int = PIECE_ROWS,
    ) -> None:
        self.root = root
        self.journals = root / "_journal"
        self.journals.mkdir(parents=True, exist_ok=True)
        self.flush_interval_s = flush_interval_s
        self.compact_interval_s = compact_interval_s
        self.max_journal_rows = max_journal_rows
        self.direct_rows = direct_rows
        self.piece_rows = piece_rows
        self._open: dict[str, Journal] = {}
        self._retention: dict[str, int] = {}
        self._failures: dict[str, list[dict[str, object]]] = {}
        self._nullable: dict[str, set[str]] = {}  # per pipeline, the columns that have held a null (see `_required`)
        self._lock = threading.Lock()
        # Handed-over batches, and markers: an Event that `flush()` waits on, None from `close()`. A deque, not a
        # queue.Queue: appending is one atomic call, with no lock for the serving thread to take.
        self._handed: deque[Served | threading.Event | None] = deque()
        self._wake = threading.Event()
        self._built: list[tuple[str, pa.Table]] = []  # log rows built but not on disk yet (at most a flush interval)
        self._waiting_rows = 0  # rows handed over since the last build: a hint that wakes the builder, not a count
        self.recovery = self.recover()
        self._thread = threading.Thread(target=self._background, name="finalmile-log-writer", daemon=True)
        self._thread.start()

    # -- the deployment hook ------------------------------------------------------------------------------------

    def __call__(self, loaded: LoadedPipeline, batch: Batch) -> None:
        config = loaded.config
        if config is not None and not config.logging:
            return
        if config is not None and config.retention_days:
            self._retention[loaded.name] = config.retention_days
        served = Served(loaded, batch, time.time_ns() // 1000)
        if config is not None and config.durability == "strict":
            self._append([served], sync=True)
        else:
            self._handed.append(served)
            # Unlocked (serving threads may race and lose an addition): it only decides when to wake the builder,
            # and the flush interval bounds the wait anyway.
            self._waiting_rows += batch.table.num_rows
            if self._waiting_rows >= self.piece_rows and not self._wake.is_set():
                self._wake.set()

    def failed(self, loaded: LoadedPipeline, rows: int, error: str, latency_ms: float, variant: str | None) -> None:
        """A request that got an error instead of outputs: one log row with `status` 'error', the message and the
        A/B variant it failed in (None when it failed outside one: its input, a step before the split).

        Error rows have no inputs or outputs (they may not even be a table), so they collect in memory and go
        straight to their own Parquet part at each tick: the journal keeps one layout per pipeline."""
        config = loaded.config
        if config is not None and not config.logging:
            return
        row = {"time": time.time_ns() // 1000, "request_id": uuid.uuid4().hex, "row": 0}
        row |= {"pipeline_version": loaded.version, "latency_ms": latency_ms, "status": "error", "error": error[:2000]}
        row |= {"rows": rows, "variant": variant}
        with self._lock:
            self._failures.setdefault(loaded.name, []).append(row)

    def _write_failures(self) -> None:
        with self._lock:
            failures, self._failures = self._failures, {}
        for pipeline, rows in failures.items():
            table = pa.Table.from_pylist(rows, schema=_FAILURE_SCHEMA)
            self._write_parquet(pipeline, [table])

    def _append(self, served: list[Served], sync: bool) -> None:
        """Build the log rows of `served`: on disk at once (and synced) when `sync`, else kept for `_persist`."""
        for run in layout_runs(served):
            pipeline = run[0].loaded.name
            for table in log_tables(run, self.piece_rows):
                table = self._required(pipeline, table)
                if sync:
                    self._journal(pipeline, table, sync=True)
                else:
                    self._built.append((pipeline, table))

    def _required(self, pipeline: str, table: pa.Table) -> pa.Table:
        """`table` with its columns marked required (not nullable) where the pipeline's log has never held a null.

        Parquet stores no definition levels for a required column, which takes a quarter off encoding the log. A
        column stays optional once it has held a null, so a pipeline's layout (and with it the journal) changes at
        most once per column; the `logs` view reads files by name, whichever way a column is marked."""
        nullable = self._nullable.setdefault(pipeline, set())
        nullable.update(f.name for f, column in zip(table.schema, table.columns, strict=True) if column.null_count)
        fields = [f.with_nullable(f.name in nullable) for f in table.schema]
        if all(f.nullable == old.nullable for f, old in zip(fields, table.schema, strict=True)):
            return table
        return pa.Table.from_arrays(table.columns, schema=pa.schema(fields, table.schema.metadata))

    def _persist(self) -> None:
        """Put the rows built since the last call on disk: a pipeline's second of heavy traffic is a Parquet file of
        its own (written once, instead of journaled, read back and written again; durable once renamed into place,
        like a compaction); lighter traffic is appended to its journal."""
        built, self._built = self._built, []
        by_pipeline: dict[str, list[pa.Table]] = {}
        for pipeline, table in built:
            by_pipeline.setdefault(pipeline, []).append(table)
        for pipeline, tables in by_pipeline.items():
            if sum(t.num_rows for t in tables) >= self.direct_rows:
                self._write_parquet(pipeline, tables)
            else:
                for table in tables:
                    self._journal(pipeline, table, sync=False)

    def _journal(self, pipeline: str, table: pa.Table, sync: bool) -> None:
        with self._lock:
            journal = self._open.get(pipeline)
            if journal is not None and (
                not journal.schema.equals(table.schema) or journal.rows > self.max_journal_rows
            ):
                self._compact_locked(pipeline)
                journal = None
            if journal is None:
                journal = self._open[pipeline] = self._new_journal(pipeline, table.schema)
            journal.append(table)
            if sync:
                journal.sync()

    def _new_journal(self, pipeline: str, schema: pa.Schema) -> Journal:
        # Arrow's own files, not Python file objects: every write through a Python file takes the GIL, which the
        # serving threads need.
        path = self.journals / f"{pipeline}--{os.getpid()}-{uuid.uuid4().hex[:12]}.arrows"
        raw = pa.OSFile(str(path), "wb")
        file = pa.BufferedOutputStream(raw, buffer_size=1 << 20)
        return Journal(path, raw, file, pa.ipc.new_stream(file, schema), schema)

    # -- background ---------------------------------------------------------------------------------------------

    def _background(self) -> None:
        # Served batches are built into log rows many at once (a few numpy and Arrow calls for hundreds of batches,
        # not a few hundred per batch beside the serving threads): as soon as a piece's worth of rows waits, since a
        # served batch kept longer holds memory the serving threads would otherwise reuse while it is still in
        # cache, and otherwise once per flush. Each build gives the GIL up a dozen times, each time a switch that
        # costs the event loop, so light traffic (one-row requests) is built once a second, not ten times. The rows
        # go to disk every `flush_interval_s` (the `fast` durability promise), or at once when `flush()` asks.
        # Parquet files from journals are written less often, since each compaction costs more than the sync, and
        # every query flushes first anyway.
        next_flush = time.monotonic() + self.flush_interval_s
        next_compaction = time.monotonic() + self.compact_interval_s
        while True:
            self._wake.wait(timeout=max(0.0, next_flush - time.monotonic()))
            self._wake.clear()
            stop, flushes = self._drain()
            if stop or flushes or time.monotonic() >= next_flush:
                self._persist_and_sync(flushes)
                next_flush = time.monotonic() + self.flush_interval_s
            if stop:
                return
            if time.monotonic() >= next_compaction:
                try:
                    self._compact_all()
                except Exception:
                    log.exception("could not compact inference logs")
                next_compaction = time.monotonic() + self.compact_interval_s

    def _drain(self) -> tuple[bool, list[threading.Event]]:
        """Build the log rows of everything handed over; whether `close()` asked the thread to stop, and the
        `flush()` calls waiting for these rows to be on disk."""
        self._waiting_rows = 0
        served: list[Served] = []
        flushes: list[threading.Event] = []
        stop = False
        while self._handed:
            item = self._handed.popleft()
            if item is None:
                stop = True
            elif isinstance(item, threading.Event):
                flushes.append(item)
            else:
                served.append(item)
        try:
            if served:
                self._append(served, sync=False)
        except Exception:
            log.exception("could not build inference log rows")
        return stop, flushes

    def _persist_and_sync(self, flushes: Iterable[threading.Event] = ()) -> None:
        """Put the built rows on disk, then release the `flush()` calls waiting for them (even if writing failed:
        the error is logged, and a caller must not hang)."""
        try:
            self._persist()
            self._write_failures()
            self._sync_all()
        except Exception:
            log.exception("could not write inference logs")
        finally:
            for done in flushes:
                done.set()

    def flush(self) -> None:
        """Put everything handed over so far on disk, then turn every journal into Parquet: queryable after this."""
        self.durable()
        self._compact_all()

    def durable(self) -> None:
        """Put everything handed over so far on disk (synced), without compacting: what a stream waits for before it
        acknowledges a batch. Compacting there made a Parquet file per batch (per message, at a message a second),
        and a day's log a six-figure count of files to read; `LogReader.logged_ids` reads journals instead."""
        if self._thread.is_alive():
            done = threading.Event()
            self._handed.append(done)  # behind every batch handed over so far
            self._wake.set()
            # Not forever: a flush racing `close()` may hand its marker over after the thread's last look.
            while not done.wait(timeout=0.5) and self._thread.is_alive():
                pass
        else:
            self._persist_and_sync(self._drain()[1])

    def close(self) -> None:
        if self._thread.is_alive():
            self._handed.append(None)
            self._wake.set()
            self._thread.join(timeout=30)
        self._persist_and_sync(self._drain()[1])
        self._compact_all()

    def _sync_all(self) -> None:
        with self._lock:
            for journal in self._open.values():
                journal.sync()

    def _compact_all(self) -> None:
        self._write_failures()
        with self._lock:
            for pipeline in list(self._open):
                self._compact_locked(pipeline)
            for pipeline, days in self._retention.items():
                self.expire(pipeline, days)

    def expire(self, pipeline: str, days: int) -> list[str]:
        """Remove `date=` partitions older than `days` days; returns the dates removed."""
        cutoff = (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%d")
        removed = []
        for partition in (self.root / f"pipeline={pipeline}").glob("date=*"):
            date = partition.name.removeprefix("date=")
            if date < cutoff:
                shutil.rmtree(partition, ignore_errors=True)
                removed.append(date)
        return sorted(removed)

    # -- compaction and recovery ----------------------------------------------------------------------------------

    def _compact_locked(self, pipeline: str) -> None:
        journal = self._open.pop(pipeline, None)
        if journal is None:
            return
        journal.close()
        self._absorb(pipeline, journal.path, Recovery())

    def _write_parquet(self, pipeline: str, tables: Iterable[pa.Table]) -> None:
        """One Parquet file per day the rows fall on (and per layout), a row group per table; each appears (renamed
        from a temporary name, after an fsync) only once complete, so a reader never sees a partial file."""
        parts: dict[tuple[int, pa.Schema], tuple[Path, pq.ParquetWriter]] = {}  # a new layout starts a new file
        try:
            for table in tables:
                if table.num_rows == 0:
                    continue
                if "pipeline" in table.column_names:  # journals from before 2026-11-23 carry it; the partition says it
                    table = table.drop_columns(["pipeline"])
                # Days as integers, not strftime (which formats every row), and a filter only when the rows span
                # midnight (filtering copies every column even when every row is kept).
                days = pc.divide(table.column("time").cast(pa.int64()), _DAY_US)
                distinct = pc.unique(days).to_pylist()
                for day in distinct:
                    key = (day, table.schema)
                    if key not in parts:
                        parts[key] = self._open_part(pipeline, day, table.schema)
                    parts[key][1].write_table(table if len(distinct) == 1 else table.filter(pc.equal(days, day)))
        except BaseException:
            for tmp, writer in parts.values():
                with contextlib.suppress(Exception):
                    writer.close()
                tmp.unlink(missing_ok=True)
            raise
        for tmp, writer in parts.values():
            writer.close()
            fsync_path(tmp)  # on disk before the journal it replaces is removed
            os.replace(tmp, tmp.with_name(tmp.name.removeprefix(".").removesuffix(".tmp")))

    def _open_part(self, pipeline: str, day: int, schema: pa.Schema) -> tuple[Path, pq.ParquetWriter]:
        date = datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y-%m-%d")
        directory = self.root / f"pipeline={pipeline}" / f"date={date}"
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet.tmp"
        # A path, not a Python file object, so Arrow writes it natively without taking the GIL for each page.
        return tmp, pq.ParquetWriter(str(tmp), schema, **log_parquet_options(schema))

    def recover(self) -> Recovery:
        """Compact journals that a previous process left (it crashed, or was killed): a torn tail is skipped, a
        corrupt journal's verified rows kept and the file set aside (`_corrupt/`), never deleted."""
        recovery = Recovery()
        for path in sorted(self.journals.glob("*.arrows")):
            pipeline, pid = journal_owner(path)
            if process_alive(pid):
                continue  # another live writer (another process or client) owns it
            self._absorb(pipeline, path, recovery)
        return recovery

    def _absorb(self, pipeline: str, path: Path, recovery: Recovery) -> None:
        """A closed journal's rows into Parquet; then the journal goes, or, when corrupt, is set aside."""
        read = read_journal(path)
        if read.torn:
            recovery.torn.append((str(path), read.torn))
            log.warning("inference log journal %s: skipped a torn tail of %d bytes", path.name, read.torn)
        self._write_parquet(pipeline, [read.table])
        recovery.rows += read.table.num_rows
        if read.corrupt_at is None:
            path.unlink(missing_ok=True)
            return
        recovery.corrupt.append(kept := set_aside(self.root, path))
        before, after = read.table.num_rows - read.salvaged, read.salvaged
        log.error("inference log journal %s is corrupt from byte %d: kept %d rows before and %d after; set aside as "
                  "_corrupt/%s", path.name, read.corrupt_at, before, after, kept)  # fmt: skip
