"""Rollout verbs: a candidate brought in step by step beside the champion, judged at each step, promoted or rolled
back; a person's actions on it; the scheduler's tick."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from finalmile.errors import ConflictError, InvalidInputError, PipelineNotDeployed
from finalmile.monitoring.config import aware_utc
from finalmile.monitoring.context import MonitorContext
from finalmile.pipelines.store import PipelineStore
from finalmile.registry.store import MetadataStore
from finalmile.rollouts.candidate import resolve_candidate
from finalmile.rollouts.plan import build_plan
from finalmile.rollouts.progress import Progress, check_arms
from finalmile.rollouts.rollout_store import RolloutRecord, RolloutStore
from finalmile.services.acting import Acting


class RolloutVerbs(Acting):
    """Mixed into `Services`."""

    metadata: MetadataStore
    pipelines: PipelineStore
    rollouts: RolloutStore
    progress: Progress
    monitoring: MonitorContext

    def rollout(
        self,
        pipeline: str,
        candidate: Any,
        steps: Any = (5, 25, 50, 100),
        step_every: Any = "10m",
        gates: Any = None,
        min_rows: Any = 500,
        key: str | None = None,
        hold_alert_after: Any = 3,
        on_hold: str = "pause",
        alias: str | None = "champion",
        actor: str | None = None,
    ) -> RolloutRecord:
        """Serve `candidate` beside the champion at `steps[0]`% of traffic; every `step_every` the step is judged
        against the champion over the same window and the rollout advances, holds or rolls back; after the last
        step the candidate is promoted. Everything is checked before anything is deployed."""
        moment = datetime.now(UTC)
        served = self.pipelines.deployment(pipeline)
        if served is None:
            self.pipelines.get_version(pipeline)  # an unknown pipeline is a 404
            raise PipelineNotDeployed(pipeline)
        running = self.rollouts.active(pipeline)
        if running is not None:
            raise ConflictError(
                f"pipeline: rollout {running.id} of '{pipeline}' is {running.state}; finish or abort it first",
                {"field": "pipeline", "rollout_id": running.id},
            )
        described, spec = resolve_candidate(self.pipelines, self.metadata, pipeline, candidate)
        champion = self.pipelines.get_version(pipeline, served.version)
        check_arms(champion.spec, spec)
        if key is not None and (not isinstance(key, str) or not key):
            raise InvalidInputError("key: the name of an input column", {"field": "key"})
        plan = build_plan(self.monitoring, pipeline, steps, step_every, gates, min_rows, key, hold_alert_after,
                          on_hold, alias)  # fmt: skip
        record = self.rollouts.create(
            pipeline, described, spec, champion.version, plan.model_dump(mode="json"), self.acting(actor), moment
        )
        self.changed(actor, "rollout start", f"pipeline {pipeline}", f"version {champion.version}",
                     f"rollout {record.id}: {described} at {plan.steps[0]:g}%")  # fmt: skip
        try:
            self.progress.settle_held(record.id)
        except Exception:  # the first split would not deploy: the rollout ends there, the champion serving on
            self.progress.act(self.rollouts.get(record.id), "abort", self.acting(actor), moment)
            raise
        return self.rollouts.get(record.id)

    def control_rollout(self, rollout_id: int, action: str, actor: str | None = None) -> RolloutRecord:
        """`pause`, `resume`, `abort` (the champion serves alone again), `promote` now, or `rollback` a promotion."""
        return self.progress.act(self.rollouts.get(rollout_id), action, self.acting(actor), datetime.now(UTC))

    def run_rollouts(self, now: Any = None) -> list[RolloutRecord]:
        """Judge every rollout whose step is due (`now`: default the clock) and put every state's deployment in
        place; what changed. `finalmile serve` calls this every second."""
        return self.progress.tick(aware_utc(now) if isinstance(now, datetime) else datetime.now(UTC))
