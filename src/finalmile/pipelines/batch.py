"""What travels through a pipeline's steps (`Batch`) and how steps compose (`Step`, `Sequence`): the executor builds
steps and the routing steps wrap them, so both import this module and neither imports the other."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import pyarrow as pa

Route = tuple[str | None, tuple[str, ...]]
"""(A/B variant or None, the model versions that ran, in order)."""


@dataclass
class Batch:
    """Rows travelling through the steps, with the routes, checks, shadows and timings they gather."""

    inputs: pa.Table
    table: pa.Table
    requests: np.ndarray
    routes: list[Route] = field(default_factory=lambda: [(None, ())])
    route_index: np.ndarray | None = None
    checks: dict[str, np.ndarray] = field(default_factory=dict)
    shadow: dict[str, pa.Table] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds each model step spent on this batch (for per-step metrics)."""
    request_ids: list[str] = field(default_factory=list)
    """One id per request in the batch, assigned when the pipeline has run (the log's join key for ground truth)."""
    trace_ids: list[str | None] | None = None
    """Each request's trace id when tracing is on (`finalmile.tracing`), for the log's `trace_id` column."""
    elapsed_s: float = 0.0
    variant_s: dict[str, float] = field(default_factory=dict)
    """Seconds each A/B variant's steps took: a row's latency is the batch's less the other variants' time."""

    @classmethod
    def start(cls, table: pa.Table, requests: np.ndarray | None = None) -> Batch:
        if requests is None:
            requests = np.zeros(table.num_rows, dtype=np.int32)
        return cls(inputs=table, table=table, requests=requests)

    def take(self, rows: np.ndarray) -> Batch:
        indices = pa.array(rows)
        return replace(
            self,
            inputs=self.inputs.take(indices),
            table=self.table.take(indices),
            requests=self.requests[rows],
            route_index=None if self.route_index is None else self.route_index[rows],
            checks={k: v[rows] for k, v in self.checks.items()},
            shadow={k: v.take(indices) for k, v in self.shadow.items()},
            errors=dict(self.errors),
        )

    def row_routes(self) -> list[Route]:
        """The route of every row."""
        if self.route_index is None:
            return [self.routes[0]] * self.table.num_rows
        return [self.routes[i] for i in self.route_index]


class Step(Protocol):
    """Anything that runs a batch and returns it: models, checks, splits and shadows all compose."""

    def run(self, batch: Batch) -> Batch: ...


class Sequence:
    """Steps run one after another; itself a step, so variants and shadows nest."""

    def __init__(self, steps: list[Step]) -> None:
        self.steps = steps

    def run(self, batch: Batch) -> Batch:
        for step in self.steps:
            batch = step.run(batch)
        return batch
