"""Batch inference over files of any size: streamed in record batches, with a progress bar, resumable.

Each input batch's result is written as its own part (`OUTPUT.partial/part-000042.arrow`, an uncompressed Arrow IPC
file, written atomically) and handed to the output's writer, which encodes it in a thread while the next batch is
scored. OUTPUT appears (renamed from a temporary name) only when every batch is in; an interrupted run resumes by
streaming the parts it finds (memory-mapped) and scoring only the rest, so no row is duplicated or scored twice, and
memory stays bounded by the batch size. A malformed input stops the run, names the file and the batch, and leaves
no output file.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from finalmile.arrow.files import TableWriter, file_format
from finalmile.errors import FinalmileError, InvalidInputError

Score = Callable[[pa.Table], pa.Table]
"""One batch of input rows in, the pipeline's output rows out (the data plane, with or without logging)."""


@dataclass
class FileInferenceResult:
    """What a file inference did: rows and batches scored, batches taken from an interrupted run, the output."""

    rows: int
    batches: int
    resumed_batches: int
    output: Path


def read_batches(path: Path, batch_size: int) -> tuple[Iterator[pa.RecordBatch], int | None]:
    """A CSV, Parquet or JSON-lines file as batches read one at a time, and its row count where the file says it."""
    fmt = file_format(path)
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such file")
    try:
        if fmt == "parquet":
            # Pre-buffering keeps every row group it has read: memory would grow with the file.
            parquet = pq.ParquetFile(path, pre_buffer=False)
            return parquet.iter_batches(batch_size=batch_size), parquet.metadata.num_rows
        if fmt == "csv":
            reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=max(1 << 20, batch_size * 64)))
            return iter(reader), None
        return iter(
            pjson.open_json(path, read_options=pjson.ReadOptions(block_size=max(1 << 20, batch_size * 64)))
        ), None
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInputError(f"{path}: cannot read it as {fmt}: {exc}") from None


def infer_file(
    score: Score,
    pipeline: str,
    source: str | Path,
    output: str | Path,
    batch_size: int = 10_000,
    progress: bool = True,
) -> FileInferenceResult:
    """Score `source` batch by batch into `output` (inputs and outputs side by side); `pipeline` names the bar."""
    source, output = Path(source), Path(output)
    file_format(output)  # refuse an unknown output type before any work
    batches, total = read_batches(source, batch_size)
    parts = output.with_name(output.name + ".partial")
    parts.mkdir(parents=True, exist_ok=True)
    rows = resumed = index = 0
    # Reading the next batch and encoding the output run in two helper threads while the model runs (ONNX Runtime
    # releases the GIL), so a run costs about what the model costs; at most two batches wait at either end.
    with (
        BackgroundWriter(output) as writer,
        progress_bar(pipeline, source, total, progress) as advance,
        prefetch(batches) as ahead,
    ):
        while True:
            try:
                batch = next(ahead)
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError) as exc:  # a malformed block: nothing partial may survive
                shutil.rmtree(parts, ignore_errors=True)
                raise InvalidInputError(f"{source}: batch {index} (rows after {rows}) is malformed: {exc}") from None
            part = parts / f"part-{index:06d}.arrow"
            if part.exists():
                resumed += 1
                with pa.memory_map(str(part)) as mapped:
                    writer.write(pa.ipc.open_file(mapped).read_all())
            else:
                writer.write(
                    _score(
                        score,
                        pa.Table.from_batches([batch]),
                        part,
                        f"{source}: batch {index} (rows {rows}–{rows + batch.num_rows - 1})",
                    )
                )
            rows += batch.num_rows
            index += 1
            advance(rows)
    shutil.rmtree(parts, ignore_errors=True)
    return FileInferenceResult(rows, index, resumed, output)


@contextmanager
def progress_bar(pipeline: str, source: Path, total: int | None, show: bool) -> Iterator[Callable[[int], None]]:
    """A rich bar of rows done and rows/s; yields `advance(rows_done)`."""
    columns = [
        TextColumn(f"[bold]{pipeline}[/] {source.name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} rows/s"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, disable=not show, transient=False) as bar:
        task = bar.add_task("rows", total=total, rate="-")

        def advance(rows: int) -> None:
            elapsed = bar.tasks[0].elapsed or 0
            bar.update(task, completed=rows, rate=f"{rows / elapsed:,.0f}" if elapsed else "-")

        yield advance


def _score(score: Score, table: pa.Table, part: Path, where: str) -> pa.Table:
    """Inputs and outputs side by side, saved as `part` (atomically) before anything else is read."""
    try:
        result = score(table)
    except FinalmileError as exc:
        exc.reword(f"{where}: {exc.message}")  # the same error class, now saying where in the file
        raise
    joined = join_outputs(table, result)
    tmp = part.with_name(f".{part.name}.tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, joined.schema) as ipc:
        ipc.write_table(joined)
    os.replace(tmp, part)
    return joined


class BackgroundWriter:
    """A `TableWriter` fed from a thread, in order, with at most two tables waiting; the file appears only when
    every table is in and nothing failed."""

    def __init__(self, output: Path) -> None:
        self._file = TableWriter(output)
        self._encoder = ThreadPoolExecutor(1, thread_name_prefix="finalmile-infer-file-writer")
        self._pending: deque[Future[None]] = deque()
        self._written = 0

    def write(self, table: pa.Table) -> None:
        self._pending.append(self._encoder.submit(self._file.write, table))
        self._written += 1
        while len(self._pending) > 2 or (self._pending and self._pending[0].done()):
            self._pending.popleft().result()

    def __enter__(self) -> BackgroundWriter:
        self._file.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: object) -> None:
        try:
            if kind is None:
                while self._pending:
                    self._pending.popleft().result()
                if self._written == 0:
                    self._file.write(pa.table({}))
        except BaseException as exc:
            kind, error = type(exc), exc
            raise
        finally:
            self._encoder.shutdown(wait=True, cancel_futures=True)  # before the file closes, even on failure
            self._file.__exit__(kind, error, tb)


@contextmanager
def prefetch(batches: Iterator[pa.RecordBatch]) -> Iterator[Iterator[pa.RecordBatch]]:
    """Read the next batches in a thread while the current one is scored (errors surface in order, at `next`)."""
    ready: queue.Queue[tuple[pa.RecordBatch | None, BaseException | None]] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                item: tuple[pa.RecordBatch | None, BaseException | None] = (next(batches), None)
            except BaseException as exc:  # StopIteration included: handed over, raised in the consumer
                item = (None, exc)
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[1] is not None:
                return

    def consume() -> Iterator[pa.RecordBatch]:
        while True:
            batch, error = ready.get()
            if error is not None:
                if isinstance(error, StopIteration):
                    return
                raise error
            assert batch is not None
            yield batch

    reader = threading.Thread(target=read, name="finalmile-infer-file-reader", daemon=True)
    reader.start()
    try:
        yield consume()
    finally:
        stop.set()
        reader.join()


def join_outputs(inputs: pa.Table, outputs: pa.Table) -> pa.Table:
    """The input rows with the pipeline's outputs beside them (outputs renamed `out_*` on a clash)."""
    table = inputs
    for name, col in zip(outputs.column_names, outputs.columns, strict=True):
        table = table.append_column(f"out_{name}" if name in inputs.column_names else name, col)
    return table
