"""The remote client's rollout verbs (`/api/v1/pipelines/{name}/rollouts`, `/api/v1/rollouts`)."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from finalmile.errors import BadRequestError
from finalmile.rollouts.rollout_store import RolloutEvent, RolloutRecord
from finalmile.sdk.refs import pipeline_name
from finalmile.sdk.replays import candidate_of
from finalmile.sdk.wire import Carrier, decode


def rollout_record(body: dict[str, Any]) -> RolloutRecord:
    """A rollout as the server sent it, its events decoded too."""
    record = decode(RolloutRecord, body)
    return dataclasses.replace(record, events=tuple(decode(RolloutEvent, e) for e in body.get("events") or ()))


class RemoteRolloutVerbs(Carrier):
    """Mixed into `RemoteClient`, the client's verbs for these nouns."""

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
        every = step_every.total_seconds() if hasattr(step_every, "total_seconds") else step_every
        body = {"candidate": candidate_of(candidate), "steps": list(steps), "step_every": every, "gates": gates}
        body |= {"min_rows": min_rows, "key": key, "hold_alert_after": hold_alert_after, "on_hold": on_hold}
        body |= {"alias": alias}
        return rollout_record(self._json("rollout", params_in_path={"name": pipeline_name(pipeline)}, json=body))

    def rollouts(self, pipeline: Any = None) -> list[RolloutRecord]:
        params = {"pipeline": pipeline_name(pipeline)} if pipeline is not None else {}
        return [rollout_record(r) for r in self._json("rollouts", params=params)]

    def rollout_run(self, rollout_id: int) -> RolloutRecord:
        return rollout_record(self._json("rollout_run", params_in_path={"rollout_id": rollout_id}))

    def control_rollout(self, rollout_id: int, action: str) -> RolloutRecord:
        where = {"rollout_id": rollout_id, "action": action}
        return rollout_record(self._json("control_rollout", params_in_path=where))

    def run_rollouts(self, now: datetime | None = None) -> list[RolloutRecord]:
        """Judged at the server's clock: `now` is refused, as a server does not judge the future."""
        if now is not None:
            raise BadRequestError("now: a server judges rollouts at its own clock", {"field": "now"})
        return [rollout_record(r) for r in self._json("run_rollouts")]
