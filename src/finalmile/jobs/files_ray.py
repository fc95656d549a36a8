"""File inference on Ray Data: the same output as `files.infer_file`, scored by a pool of Ray actors.

Ray Data reads the file in blocks; `map_batches` sends each batch to one of an actor pool, and each actor builds
the pipeline once (its own services, the version loaded from the shared artifact store, hashes verified) and keeps
it for every batch it scores. The driver streams the scored batches back (`preserve_order`) into the one output
file, so memory stays bounded by the blocks in flight and the file appears only once every row is in. Every output
row carries its own inputs beside its outputs; the order of rows follows the input for files Ray reads as whole
blocks, but bench/ray_backend.py found two of forty batches out of place on a 2,000,000-row, 29-column Parquet
file that Ray 2.60 splits into several read tasks (open in issue 15). Unlike the local path it does not resume an
interrupted run: it is for files too large for one machine's cores, where a rerun is cheaper than bookkeeping
across nodes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import ray
import ray.data

from finalmile.arrow.files import file_format
from finalmile.errors import FinalmileError, InvalidInputError
from finalmile.jobs.files import BackgroundWriter, FileInferenceResult, Score, join_outputs, progress_bar

ScoreFactory = Callable[[], Score]
"""Builds the pipeline in an actor and returns its `Score` (picklable: given by the composition root)."""


FAILED = "__finalmile_error__"
"""The one column of a batch an actor could not score: its error as JSON (Ray's exception chain drops the cause)."""


class _Scorer:
    """One actor of the pool: builds the pipeline once, then scores each batch it is given."""

    def __init__(self, make_score: ScoreFactory) -> None:
        self.score = make_score()

    def __call__(self, table: pa.Table) -> pa.Table:
        try:
            return join_outputs(table, self.score(table))
        except FinalmileError as exc:  # said by the driver as the same error, where the local path would say it
            return pa.table({FAILED: [json.dumps([type(exc).__name__, exc.message, exc.detail], default=str)]})


def infer_file_on_ray(
    make_score: ScoreFactory,
    pipeline: str,
    source: str | Path,
    output: str | Path,
    batch_size: int = 10_000,
    progress: bool = True,
    actors: int | None = None,
) -> FileInferenceResult:
    """Score `source` into `output` on the Ray cluster this process is connected to (or a local one it starts);
    `actors` defaults to one per CPU of the cluster."""
    source, output = Path(source), Path(output)
    file_format(output)  # refuse an unknown output type before any work
    fmt = file_format(source)
    if not source.is_file():
        raise InvalidInputError(f"{source}: no such file")
    if not ray.is_initialized():
        ray.init(namespace="finalmile", include_dashboard=False, log_to_driver=False, configure_logging=False)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False  # finalmile's own bar says rows and rows/s
    read = {"parquet": ray.data.read_parquet, "csv": ray.data.read_csv, "json": ray.data.read_json}[fmt]
    try:
        data = read(str(source))
        total = data.count() if fmt == "parquet" else None  # Parquet says it from its footers, the others not
    except Exception as exc:  # Ray wraps Arrow's and the filesystem's errors: said as the input's fault
        raise InvalidInputError(f"{source}: cannot read it as {fmt}: {_last_line(exc)}") from None
    pool = actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
    scored = data.map_batches(
        _Scorer,
        fn_constructor_args=(make_score,),
        batch_size=batch_size,
        batch_format="pyarrow",
        zero_copy_batch=True,
        concurrency=(1, pool),  # starts on what the cluster has free, grows to one actor per CPU
        num_cpus=1,
    )
    rows = batches = 0
    with BackgroundWriter(output) as writer, progress_bar(pipeline, source, total, progress) as advance:
        for batch in scored.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2):
            assert isinstance(batch, pa.Table)
            if FAILED in batch.column_names:  # the output never appears: the writer is left by an error
                kind, message, detail = json.loads(batch.column(FAILED)[0].as_py())
                raise FinalmileError.rebuild(kind, f"{source}: rows after {rows}: {message}", detail)
            writer.write(batch)
            rows += batch.num_rows
            batches += 1
            advance(rows)
    return FileInferenceResult(rows, batches, 0, output)


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:400]
