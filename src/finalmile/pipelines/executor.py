"""Runs a pipeline version over Arrow batches.

Every step has one method, `run(batch) -> batch`; a split or a shadow wraps other steps and is itself a step, so the
executor knows nothing about step kinds. A `Batch` carries, beside the table, what the inference log needs per row:
which request it came from, which route (A/B variant and model versions) produced it, check flags, and the shadow
challengers' outputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

import finalmile.tracing as tracing
from finalmile.pipelines.batch import Batch, Sequence, Step
from finalmile.pipelines.checks import compile_check
from finalmile.pipelines.guardrails import GuardrailStep
from finalmile.pipelines.routing import ShadowStep, SplitStep
from finalmile.pipelines.spec import (
    CheckStepSpec,
    GuardrailStepSpec,
    ModelStepSpec,
    PipelineSpec,
    ShadowStepSpec,
    SplitStepSpec,
)
from finalmile.runtimes.base import Runtime


class ModelStep:
    """Runs one model version on the batch's current table and replaces it with the outputs."""

    def __init__(self, ref: str, runtime: Runtime) -> None:
        self.ref = ref
        self.runtime = runtime

    def run(self, batch: Batch) -> Batch:
        started = time.perf_counter()
        if tracing.enabled() and tracing.in_batch():
            with tracing.step(f"model {self.ref}"):
                out = self.runtime.predict(batch.table)
        else:
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


def build(spec: PipelineSpec, load: Callable[[str], Runtime]) -> Sequence:
    """Turn a pipeline spec into runnable steps; `load(ref)` returns the loaded runtime of a model version."""

    def steps_of(specs: list[Any]) -> list[Step]:
        built: list[Step] = []
        for s in specs:
            if isinstance(s, ModelStepSpec):
                built.append(ModelStep(s.model, load(s.model)))
            elif isinstance(s, CheckStepSpec):
                built.append(CheckStep(s.name, s.expression))
            elif isinstance(s, GuardrailStepSpec):
                built.append(GuardrailStep(s.name, s.column, s.compiled(), s.action, s.refusal))
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
