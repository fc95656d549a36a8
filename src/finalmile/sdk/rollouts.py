"""Rollouts as the embedded client speaks them (the remote client speaks the same verbs over
`/api/v1/pipelines/{name}/rollouts` and `/api/v1/rollouts`)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from finalmile.rollouts.rollout_store import RolloutRecord
from finalmile.sdk.refs import pipeline_name
from finalmile.sdk.replays import candidate_of

if TYPE_CHECKING:
    from finalmile.services import Services


class RolloutVerbs:
    """Mixed into the embedded client."""

    services: Services

    def rollout(
        self,
        pipeline: Any,
        candidate: Any,
        steps: list[float] | tuple[float, ...] = (5, 25, 50, 100),
        step_every: Any = "10m",
        gates: list[Any] | None = None,
        min_rows: int = 500,
        key: str | None = None,
        hold_alert_after: int = 3,
        on_hold: str = "pause",
        alias: str | None = "champion",
    ) -> RolloutRecord:
        """Serve `candidate` (a version of the pipeline, a model version in place of its own, or a definition) beside
        the champion at `steps[0]`% of traffic. At the end of each step (`step_every`) the candidate is judged
        against the champion over the same window — `gates`: names or definitions, by default `error_rate`,
        `latency_p99` and `score_psi`, and any monitor kind (`{"kind": "performance", "metric": "accuracy",
        "margin": 0.02}`) — and advances, holds (fewer than `min_rows` rows in an arm, or a missing figure; after
        `hold_alert_after` holds it alerts and does `on_hold`: pause, abort or wait) or rolls back. After the last
        step it is promoted and `alias` moves to its model version. `key`: an input column that keeps one customer
        on one arm. `finalmile serve` runs the steps; `run_rollouts` does here."""
        return self.services.rollout(
            pipeline_name(pipeline), candidate_of(candidate), list(steps), step_every, gates, min_rows, key,
            hold_alert_after, on_hold, alias,
        )  # fmt: skip

    def rollouts(self, pipeline: Any = None) -> list[RolloutRecord]:
        return self.services.rollouts.all(pipeline_name(pipeline) if pipeline is not None else None)

    def rollout_run(self, rollout_id: int) -> RolloutRecord:
        """One rollout with every transition and its evidence (each gate's figures for both arms)."""
        return self.services.rollouts.get(rollout_id)

    def control_rollout(self, rollout_id: int, action: str) -> RolloutRecord:
        """`pause`, `resume`, `abort` (all traffic back to the champion), `promote` now, or `rollback` a promotion
        (the champion's version serves again)."""
        return self.services.control_rollout(rollout_id, action)

    def run_rollouts(self, now: datetime | None = None) -> list[RolloutRecord]:
        """Judge every rollout whose step is due by `now` (default: the clock); the rollouts that moved."""
        return self.services.run_rollouts(now)
