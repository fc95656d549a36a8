"""Runs a pipeline version over Arrow batches.

Every step has one method, `run(batch) -> batch`; a split or a shadow wraps other steps and is itself a step, so the
executor knows nothing about step kinds. A `Batch` carries, beside the table, what the inference log needs per row:
which request it came from, which route (A/B variant and model versions) produced it, check flags, and the shadow
challengers' outputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from finalmile.pipelines.checks import compile_check
from finalmile.pipelines.routing import ShadowStep, SplitStep
from finalmile.pipelines.spec import CheckStepSpec, ModelStepSpec, PipelineSpec, ShadowStepSpec, SplitStepSpec
from finalmile.runtimes.base import Runtime

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
    elapsed_s: float = 0.0

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


class ModelStep:
    """Runs one model version on the batch's current table and replaces it with the outputs."""

    def __init__(self, ref: str, runtime: Runtime) -> None:
        self.ref = ref
        self.runtime = runtime

    def run(self, batch: Batch) -> Batch:
        started = time.perf_counter()
        out = self.runtime.predict(batch.table)
        batch.timings[self.ref] = batch.timings.get(self.ref, 0.0) + time.perf_counter() - started
        routes = [(variant, (*models, self.ref)) for variant, models in batch.routes]
        return replace(batch, table=out, routes=routes)


class CheckStep:
    """Flags rows where the expression holds; never fails the request (an unevaluable check flags nothing)."""

    def __init__(self, name: str, expression: str) -> None:
        self.name = name
        self.evaluate, self.input_columns, self.output_columns = compile_check(expression)

    def run(self, batch: Batch) -> Batch:
        errors = batch.errors
        try:
            flags = self.evaluate(batch.inputs, batch.table)
        except Exception as exc:
            flags = np.zeros(batch.table.num_rows, dtype=bool)
            errors = {**errors, f"check:{self.name}": str(exc)}
        checks = dict(batch.checks)
        checks[self.name] = flags if self.name not in checks else checks[self.name] | flags
        return replace(batch, checks=checks, errors=errors)


class Sequence:
    """Steps run one after another; itself a step, so variants and shadows nest."""

    def __init__(self, steps: list[Step]) -> None:
        self.steps = steps

    def run(self, batch: Batch) -> Batch:
        for step in self.steps:
            batch = step.run(batch)
        return batch


def build(spec: PipelineSpec, load: Callable[[str], Runtime]) -> Sequence:
    """Turn a pipeline spec into runnable steps; `load(ref)` returns the loaded runtime of a model version."""

    def steps_of(specs: list[Any]) -> list[Step]:
        built: list[Step] = []
        for s in specs:
            if isinstance(s, ModelStepSpec):
                built.append(ModelStep(s.model, load(s.model)))
            elif isinstance(s, CheckStepSpec):
                built.append(CheckStep(s.name, s.expression))
            elif isinstance(s, SplitStepSpec):
                built.append(
                    SplitStep([(v.name, v.weight, Sequence(steps_of(v.steps))) for v in s.variants], key=s.key)
                )
            elif isinstance(s, ShadowStepSpec):
                built.append(
                    ShadowStep(
                        Sequence(steps_of(s.champion)),
                        {name: Sequence(steps_of(c)) for name, c in s.challengers.items()},
                    )
                )
        return built

    return Sequence(steps_of(list(spec.steps)))
