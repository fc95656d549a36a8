"""Replays as the embedded client speaks them (the remote client speaks the same verbs over
`/api/v1/pipelines/{name}/replays` and `/api/v1/replays`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa

from finalmile.rollouts.store import ReplayRecord
from finalmile.sdk.refs import pipeline_name

if TYPE_CHECKING:
    from finalmile.services import Services


def candidate_of(candidate: Any) -> Any:
    """A handle stands for what it names: a model version for its reference, a pipeline draft for its steps."""
    if hasattr(candidate, "ref"):
        return candidate.ref
    if hasattr(candidate, "steps") and hasattr(candidate, "name"):
        return {"steps": [s.model_dump(mode="json") for s in candidate.steps]}
    return candidate


class ReplayVerbs:
    """Mixed into the embedded client."""

    services: Services

    def replay(
        self,
        pipeline: Any,
        candidate: Any,
        start: Any = None,
        end: Any = None,
        sample: float | None = None,
        seed: int = 0,
        segment_by: str | None = None,
        label: str | None = None,
    ) -> ReplayRecord:
        """Run `pipeline`'s logged inputs from `start` to `end` through `candidate` — a version of the pipeline, a
        model version in place of the one it serves (`"fraud:7"`, `"fraud@challenger"`) or a definition — and compare
        with what was served: agreement, score differences, PSI, check rates, latency, quality where labels have
        arrived, per `segment_by` value. `sample`: a fraction of the rows, drawn by `seed` (the same figures again
        for the same range, sample and seed). Stored: `replays`, `replay_run`, `replay_rows`, the `replays` view."""
        return self.services.replay(
            pipeline_name(pipeline), candidate_of(candidate), start, end, sample, seed, segment_by, label, True
        )

    def replays(self, pipeline: Any = None) -> list[ReplayRecord]:
        return self.services.replays.all(pipeline_name(pipeline) if pipeline is not None else None)

    def replay_run(self, replay_id: int) -> ReplayRecord:
        return self.services.replays.get(replay_id)

    def replay_rows(self, replay_id: int, limit: int | None = 1000) -> pa.Table:
        """A replay's rows, where the candidate and what was served differ most first."""
        return self.services.replay_rows(replay_id, limit)
