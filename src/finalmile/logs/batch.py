"""Batch inference over files of any size: streamed in record batches, with a progress bar, resumable.

Each input batch's result is written as its own part (`OUTPUT.partial/part-000042.parquet`, atomically) before the
next is read, so an interrupted run resumes at the first missing part and never duplicates a row. When every part
is there they are joined into OUTPUT under a temporary name and renamed. A malformed input stops the run, names the
file and the batch, and leaves no output file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from finalmile.errors import FinalmileError, InvalidInputError
from finalmile.files import file_format, write_table

if TYPE_CHECKING:
    from finalmile.client import Client


@dataclass
class FileInferenceResult:
    rows: int
    batches: int
    resumed_batches: int
    output: Path


def _batches(path: Path, batch_size: int) -> tuple[Iterator[pa.RecordBatch], int | None]:
    fmt = file_format(path)
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such file")
    try:
        if fmt == "parquet":
            parquet = pq.ParquetFile(path)
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
    client: Client,
    pipeline: str,
    source: str | Path,
    output: str | Path,
    batch_size: int = 10_000,
    log: bool = False,
    progress: bool = True,
) -> FileInferenceResult:
    source, output = Path(source), Path(output)
    file_format(output)  # refuse an unknown output type before any work
    batches, total = _batches(source, batch_size)
    parts = output.with_name(output.name + ".partial")
    parts.mkdir(parents=True, exist_ok=True)
    rows = resumed = index = 0
    columns = [
        TextColumn(f"[bold]{pipeline}[/] {source.name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} rows/s"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("rows", total=total, rate="-")
        while True:
            part = parts / f"part-{index:06d}.parquet"
            try:
                batch = next(batches)
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError) as exc:  # a malformed block: nothing partial may survive
                shutil.rmtree(parts, ignore_errors=True)
                raise InvalidInputError(f"{source}: batch {index} (rows after {rows}) is malformed: {exc}") from None
            if part.exists():
                resumed += 1
            else:
                table = pa.Table.from_batches([batch])
                try:
                    result = client.infer_pipeline(pipeline, table, log=log).table
                except FinalmileError as exc:
                    raise FinalmileError(
                        f"{source}: batch {index} (rows {rows}–{rows + table.num_rows - 1}): {exc.message}"
                    ) from None
                joined = _join(table, result)
                tmp = part.with_name(f".{part.name}.tmp")
                pq.write_table(joined, tmp)
                os.replace(tmp, part)
            rows += batch.num_rows
            index += 1
            elapsed = bar.tasks[0].elapsed or 0
            bar.update(task, completed=rows, rate=f"{rows / elapsed:,.0f}" if elapsed else "-")
    _assemble(parts, output, index)
    shutil.rmtree(parts, ignore_errors=True)
    return FileInferenceResult(rows, index, resumed, output)


def _join(inputs: pa.Table, outputs: pa.Table) -> pa.Table:
    """The input rows with the pipeline's outputs beside them (outputs renamed `out_*` on a clash)."""
    table = inputs
    for name, col in zip(outputs.column_names, outputs.columns, strict=True):
        table = table.append_column(f"out_{name}" if name in inputs.column_names else name, col)
    return table


def _assemble(parts: Path, output: Path, count: int) -> None:
    files = [parts / f"part-{i:06d}.parquet" for i in range(count)]
    tmp = output.with_name(f".{output.name}.partial-file")
    fmt = file_format(output)
    if fmt == "parquet" and files:
        schema = pq.read_schema(files[0])
        with pq.ParquetWriter(tmp, schema) as writer:
            for f in files:
                writer.write_table(pq.read_table(f))
        os.replace(tmp, output)
        return
    table = pa.concat_tables([pq.read_table(f) for f in files]) if files else pa.table({})
    write_table(table, output)
