"""A/B splits and shadow deployments: steps that wrap other steps."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from finalmile.errors import PipelineDefinitionError, SchemaError, fail_in_variant

if TYPE_CHECKING:
    from finalmile.pipelines.batch import Batch, Sequence


class SplitStep:
    """Sends each request (or, with `key`, each key value) to one variant, in proportion to the weights.

    Without a key every request draws once, so all of its rows go the same way. With a key the draw is a stable
    hash of the key's value, so the same customer always lands in the same variant, in every process.
    """

    def __init__(self, variants: list[tuple[str, float, Sequence]], key: str | None = None, seed: int | None = None):
        self.names = [name for name, _, _ in variants]
        self.steps = [steps for _, _, steps in variants]
        weights = np.asarray([w for _, w, _ in variants], dtype=np.float64)
        self.edges = np.cumsum(weights / weights.sum())
        self.edges[-1] = 1.0
        self.key = key
        self.rng = np.random.default_rng(seed)
        if key is not None:
            # pandas at load, not at import (every client and CLI command imports this module) nor at the first
            # request (a third of a second).
            import pandas as pd

            self._hash = pd.util.hash_array

    def assign(self, batch: Batch) -> np.ndarray:
        if self.key is None:
            per_request = self.rng.random(int(batch.requests.max()) + 1 if len(batch.requests) else 0)
            u = per_request[batch.requests]
        else:
            if self.key not in batch.inputs.column_names:
                raise SchemaError([f"column '{self.key}': missing (the A/B split key)"])
            values = batch.inputs.column(self.key).to_numpy(zero_copy_only=False)
            hashed = self._hash(np.asarray(values, dtype=object))
            u = (hashed >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        return np.searchsorted(self.edges, u, side="right").clip(0, len(self.names) - 1)

    def run(self, batch: Batch) -> Batch:
        """Each variant's rows through its steps. A variant that raises fails the batch, its error naming the
        variant (the batcher then runs each request alone, so the other arm's requests are answered); each
        variant's seconds are kept, so a row's logged latency is its own arm's, not the slower arm's."""
        assignment = self.assign(batch)
        parts: list[tuple[np.ndarray, Batch]] = []
        seconds: dict[str, float] = {}
        for i, steps in enumerate(self.steps):
            rows = np.flatnonzero(assignment == i)
            if len(rows) == 0:
                continue
            sub = batch.take(rows)
            sub.routes = [(self.names[i], models) for _, models in sub.routes]
            started = time.perf_counter()
            try:
                ran = steps.run(sub)
            except Exception as exc:
                fail_in_variant(exc, self.names[i])
                raise
            seconds[self.names[i]] = time.perf_counter() - started
            parts.append((rows, ran))
        merged = merge(batch, parts)
        merged.variant_s = {**batch.variant_s, **seconds}
        return merged


def merge(original: Batch, parts: list[tuple[np.ndarray, Batch]]) -> Batch:
    """Put the variants' rows back in their original order, with their routes and check flags."""
    if len(parts) == 1:
        return parts[0][1]
    order = np.concatenate([rows for rows, _ in parts])
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    try:
        table = pa.concat_tables([b.table for _, b in parts], promote_options="permissive").take(pa.array(inverse))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise PipelineDefinitionError(
            f"the A/B variants return different outputs and cannot be merged: {exc}"
        ) from None
    routes: list = []
    route_index = []
    for _, b in parts:
        local = b.route_index if b.route_index is not None else np.zeros(b.table.num_rows, dtype=np.int32)
        route_index.append(local + len(routes))
        routes.extend(b.routes)
    checks = {}
    for name in {n for _, b in parts for n in b.checks}:
        checks[name] = np.concatenate([b.checks.get(name, np.zeros(b.table.num_rows, dtype=bool)) for _, b in parts])[
            inverse
        ]
    errors = {k: v for _, b in parts for k, v in b.errors.items()}
    return replace(
        original,
        table=table,
        routes=routes,
        route_index=np.concatenate(route_index)[inverse],
        checks=checks,
        errors=errors,
    )


class ShadowStep:
    """Runs the champion for the response and every challenger on the same input for the log only.

    A challenger's failure is recorded in `batch.errors` and never fails the request.
    """

    def __init__(self, champion: Sequence, challengers: dict[str, Sequence]) -> None:
        self.champion = champion
        self.challengers = challengers

    def run(self, batch: Batch) -> Batch:
        result = self.champion.run(batch)
        shadow = dict(result.shadow)
        errors = dict(result.errors)
        for name, steps in self.challengers.items():
            try:
                shadow[name] = steps.run(replace(batch, checks={}, shadow={}, errors={})).table
            except Exception as exc:
                errors[f"shadow:{name}"] = f"{type(exc).__name__}: {exc}"
        return replace(result, shadow=shadow, errors=errors)
