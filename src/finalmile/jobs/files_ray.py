"""File inference on Ray: the same output as `files.infer_file`, row for row, scored by a pool of Ray actors.

The driver reads the file batch by batch with the local path's streaming reader and hands the batches round-robin
to a pool of actors, each of which builds the pipeline once (its own services, the version loaded from the shared
artifact store, hashes verified) and keeps it for every batch. Results are taken back in the order the batches
were handed out (an actor runs its calls in order), with at most two batches per actor in flight, so the output is
the input's order and memory stays bounded; the file appears only once every row is in.

Not Ray Data's `read_parquet` + `map_batches`: Ray 2.60's Parquet reader handed two of forty batches out of
order on a 2,000,000-row file even with `preserve_order` (its footer reader completes out of order), and the
output must be the input's rows in the input's order. Unlike the local path it does not resume an interrupted
run: it is for files too large for one machine's cores, where a rerun is cheaper than bookkeeping across nodes.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray

from finalmile.arrow.files import file_format
from finalmile.errors import FinalmileError, InvalidInputError
from finalmile.jobs.files import (
    BackgroundWriter,
    FileInferenceResult,
    Score,
    join_outputs,
    prefetch,
    progress_bar,
    read_batches,
)

ScoreFactory = Callable[[], Score]
"""Builds the pipeline in an actor and returns its `Score` (picklable: given by the composition root)."""


FAILED = "__finalmile_error__"
"""The one column of a batch an actor could not score: its error as JSON (Ray's exception chain drops the cause)."""
IN_FLIGHT_PER_ACTOR = 2
"""Batches handed to each actor before the driver waits for the oldest: one scoring, one queued behind it."""


class Scorer:
    """One actor of the pool: builds the pipeline once, then scores each batch it is given."""

    def __init__(self, make_score: ScoreFactory) -> None:
        self._score = make_score()

    def score(self, table: pa.Table) -> pa.Table:
        try:
            return join_outputs(table, self._score(table))
        except FinalmileError as exc:  # said by the driver as the same error, where the local path would say it
            return pa.table({FAILED: [json.dumps([type(exc).__name__, exc.message, exc.detail], default=str)]})


def actor_cpus(free: float, actors: int) -> float:
    """CPUs each of `actors` asks: a whole one where that many are free, else an equal share of what is free, so
    that the pool runs beside replicas holding fractions of CPUs (each actor asking a whole CPU, with 0.5 free,
    waited for ever); with none free, a whole one, placed when one frees or a node is added."""
    share = math.floor(free / actors * 10_000) / 10_000  # Ray counts CPUs in ten-thousandths
    return min(1.0, share) if share > 0 else 1.0


def infer_file_on_ray(
    make_score: ScoreFactory,
    pipeline: str,
    source: str | Path,
    output: str | Path,
    batch_size: int = 10_000,
    progress: bool = True,
    actors: int | None = None,
) -> FileInferenceResult:
    """Score `source` into `output` on the Ray cluster this process has joined (`backends.ray_cluster.join`);
    `actors` defaults to one per CPU the cluster has free (at least one; `actor_cpus` says what each asks)."""
    source, output = Path(source), Path(output)
    file_format(output)  # refuse an unknown output type before any work
    batches, total = read_batches(source, batch_size)
    free = ray.available_resources().get("CPU", 0.0)
    size = actors or max(1, int(free))
    actor_class: Any = ray.remote(num_cpus=actor_cpus(free, size))(Scorer)
    pool = [actor_class.remote(make_score) for _ in range(size)]
    window: deque[Any] = deque()
    rows = index = 0
    try:
        with (
            BackgroundWriter(output) as writer,
            progress_bar(pipeline, source, total, progress) as advance,
            prefetch(batches) as ahead,
        ):

            def take_oldest() -> None:
                nonlocal rows
                scored = ray.get(window.popleft())
                if FAILED in scored.column_names:  # the output never appears: the writer is left by an error
                    kind, message, detail = json.loads(scored.column(FAILED)[0].as_py())
                    raise FinalmileError.rebuild(kind, f"{source}: rows after {rows}: {message}", detail)
                writer.write(scored)
                rows += scored.num_rows
                advance(rows)

            while True:
                try:
                    batch = next(ahead)
                except StopIteration:
                    break
                except (pa.ArrowInvalid, OSError) as exc:  # a malformed block, as the local path says it
                    raise InvalidInputError(f"{source}: batch {index} is malformed: {exc}") from None
                window.append(pool[index % size].score.remote(pa.Table.from_batches([batch])))
                index += 1
                if len(window) >= IN_FLIGHT_PER_ACTOR * size:
                    take_oldest()
            while window:
                take_oldest()
    finally:
        for actor in pool:
            ray.kill(actor)
    return FileInferenceResult(rows, index, 0, output)
