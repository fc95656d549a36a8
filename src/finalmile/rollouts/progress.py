"""A rollout's progress: its first split deployed, each due step judged and acted on, a person's actions, and the
deployment each state asks for put in place.

Every transition is first recorded in the store (guarded: see `rollout_store`), then deployed; a tick also deploys
what any unsettled rollout asks for, so a server killed between the two leaves nothing half done: the next tick, on
it or another server, finishes it. A step's traffic is a split of two variants, `champion` (the definition serving
when the rollout began) and `candidate`, so each row's arm is in the log.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from finalmile.errors import ConflictError, InvalidInputError
from finalmile.monitoring.actions import Deployer
from finalmile.monitoring.context import MonitorContext
from finalmile.monitoring.store import MonitorStore
from finalmile.pipelines.spec import PipelineSpec, SplitStepSpec, pinned_models, walk
from finalmile.rollouts.judge import Judgement, judge, windows
from finalmile.rollouts.plan import ARMS, RolloutPlan
from finalmile.rollouts.rollout_store import ACTIVE, RolloutEvent, RolloutRecord, RolloutStore, share

log = logging.getLogger(__name__)
LEASE_S = 15.0
"""How long a server holds a rollout while it judges a step or deploys (a killed server's lease lapses after it).
Short, as two servers doing the same is harmless: an evaluation is recorded once (the event is unique and the state
change conditional), and deploying a version that is deployed already changes nothing."""
ACTIONS = ("pause", "resume", "abort", "promote", "rollback")
_ALLOWED = {
    "pause": ("running",),
    "resume": ("paused",),
    "abort": ACTIVE,
    "promote": ACTIVE,
    "rollback": ("promoted",),
}


class Changes(Deployer, Protocol):
    """What a rollout changes: deployments and pipeline versions (a `Deployer`), a model's alias, the audit trail."""

    def set_alias(self, name: str, version: int, alias: str, actor: str | None = None) -> Any: ...

    def changed(self, actor: str | None, action: str, target: str, before: object = None, after: object = None,
                trail: Any = None) -> str: ...  # fmt: skip


def check_arms(champion: dict[str, Any], candidate: dict[str, Any]) -> None:
    """A rollout's arms must be plain definitions: a split inside one would rename its rows' variant."""
    for field, spec in (("pipeline", champion), ("candidate", candidate)):
        if any(isinstance(s, SplitStepSpec) for s in walk(list(PipelineSpec.model_validate(spec).steps))):
            raise InvalidInputError(
                f"{field}: its definition holds an A/B split; a rollout splits traffic itself (route the split "
                "to one variant first)",
                {"field": field},
            )
    if champion["steps"] == candidate["steps"]:
        raise InvalidInputError("candidate: it is what the pipeline serves already", {"field": "candidate"})


def split_spec(pipeline: str, champion: dict[str, Any], candidate: dict[str, Any], share: float,
               key: str | None) -> dict[str, Any]:  # fmt: skip
    """The definition serving one step: the champion's and the candidate's steps as the split's two variants."""
    variants = [
        {"name": ARMS[0], "weight": 100.0 - share, "steps": champion["steps"]},
        {"name": ARMS[1], "weight": share, "steps": candidate["steps"]},
    ]
    return {"name": pipeline, "steps": [{"kind": "split", "key": key, "variants": variants}]}


class Progress:
    """Drives the rollouts of one workspace."""

    def __init__(self, store: RolloutStore, changes: Changes, monitoring: MonitorContext, runner: str,
                 alerts: MonitorStore) -> None:  # fmt: skip
        self.store = store
        self.changes = changes
        self.monitoring = monitoring
        self.runner = runner
        self.alerts = alerts

    def tick(self, now: datetime) -> list[RolloutRecord]:
        """Judge every running rollout whose step is due and settle every deployment not in place; what changed."""
        changed = []
        for record in self.store.pending(now):
            if not self.store.claim(record.id, self.runner, LEASE_S, now):
                continue  # another server has it
            try:
                current = self.store.get(record.id)
                if current.state == "running" and current.due_at <= now and current.settled:
                    after = self._evaluate(current, now)
                    current = after or current
                    changed += [after] if after else []
                if not current.settled:
                    self.settle(current)
            except Exception:  # one rollout failing (a deploy that will not load) never stops the others
                log.exception("rollout %s of %s failed to progress", record.id, record.pipeline)
            finally:
                self.store.release(record.id, self.runner)
        return changed

    def _evaluate(self, record: RolloutRecord, now: datetime) -> RolloutRecord | None:
        plan = RolloutPlan.model_validate(record.plan)
        assert record.serving_version is not None
        arms = windows(record.pipeline, record.serving_version, record.step_started_at, now, record.created_at,
                       plan.steps[record.step])  # fmt: skip
        verdict = judge(self.monitoring, arms, plan)
        verdict.evidence["window"] = [record.step_started_at.isoformat(), now.isoformat()]
        every = timedelta(seconds=plan.step_every_s)
        changes: dict[str, Any] = {"reason": verdict.reason}
        decision: str = verdict.decision
        if decision == "advance" and record.step + 1 == len(plan.steps):
            decision = "promote"
            changes |= {"state": "promoted", "settled": False, "finished_at": now}
        elif decision == "advance":
            changes |= {"step": record.step + 1, "holds": 0, "step_started_at": now, "due_at": now + every,
                        "settled": False}  # fmt: skip
        elif decision == "rollback":
            changes |= {"state": "rolled_back", "settled": False, "finished_at": now}
        else:
            changes |= {"holds": record.holds + 1, "due_at": now + every}
            if record.holds + 1 >= plan.hold_alert_after and plan.on_hold != "wait":
                changes |= {"state": "paused"} if plan.on_hold == "pause" else {
                    "state": "aborted", "settled": False, "finished_at": now}  # fmt: skip
        weight = share(changes.get("state", record.state), changes.get("step", record.step), plan.steps)
        event = RolloutEvent(record.step, record.holds, decision, verdict.reason, verdict.evidence, weight,
                             f"rollout {record.id}", now)  # fmt: skip
        after = self.store.transition(record, event, changes)
        if after is None:
            return None
        self._record(record.step, after, decision, verdict, plan)
        return after

    def _record(self, step: int, after: RolloutRecord, decision: str, verdict: Judgement, plan: RolloutPlan) -> None:
        """The audit trail's entry, with each gate's figures; an alert where a person should look."""
        figures = "; ".join(f"{g['gate']}: {g['note']}" for g in verdict.evidence.get("gates", []))
        said = f"rollout {after.id} step {step + 1}/{len(plan.steps)} ({plan.steps[step]:g}%): {verdict.reason}"
        self.changes.changed(f"rollout {after.id}", f"rollout {decision}", f"pipeline {after.pipeline}",
                             after.candidate, said + (f" [{figures}]" if figures else ""))  # fmt: skip
        held_long = decision == "hold" and after.holds >= plan.hold_alert_after
        if decision == "rollback" or held_long:
            level = "alert" if decision == "rollback" else "warning"
            what = "rolled back" if decision == "rollback" else f"held {after.holds} times ({after.state})"
            self.alerts.raise_alert(
                f"rollout {after.id} of {after.pipeline}",
                level,
                {
                    "rollout": after.id,
                    "pipeline": after.pipeline,
                    "candidate": after.candidate,
                    "message": f"{after.candidate} {what}: {verdict.reason}",
                },  # fmt: skip
            )

    def act(self, record: RolloutRecord, action: str, actor: str, now: datetime) -> RolloutRecord:
        """A person's action: pause, resume, abort (back to the champion), promote now, or roll a promotion back."""
        if action not in ACTIONS:
            raise InvalidInputError(f"action: {action!r} is not one of {', '.join(ACTIONS)}", {"field": "action"})
        if record.state not in _ALLOWED[action]:
            raise ConflictError(f"rollout {record.id} is {record.state}: it cannot {action}", {"state": record.state})
        plan = RolloutPlan.model_validate(record.plan)
        state = {"pause": "paused", "resume": "running", "abort": "aborted", "promote": "promoted",
                 "rollback": "rolled_back"}[action]  # fmt: skip
        changes: dict[str, Any] = {"state": state, "reason": f"{action} by {actor}"}
        if action == "resume":
            changes |= {"holds": 0, "due_at": now + timedelta(seconds=plan.step_every_s)}
        elif action != "pause":
            changes |= {"settled": False, "finished_at": now}
        weight = share(state, record.step, plan.steps)
        event = RolloutEvent(record.step, None, action, f"{action} by {actor}", {}, weight, actor, now)
        after = self.store.transition(record, event, changes)
        if after is None:
            raise ConflictError(f"rollout {record.id} changed meanwhile; look again", {"rollout_id": record.id})
        self.changes.changed(actor, f"rollout {action}", f"pipeline {record.pipeline}", record.state, state)
        if not after.settled:
            self.settle_held(after.id)
        return self.store.get(record.id)

    def settle_held(self, rollout_id: int) -> None:
        """Settle under the rollout's lease, waiting while a server's tick holds it: settling beside a tick would
        deploy the same change twice (two versions, two audit entries). Raises what the deploy raises."""
        deadline = time.monotonic() + LEASE_S
        while not self.store.claim(rollout_id, self.runner, LEASE_S, datetime.now(UTC)):
            if time.monotonic() > deadline:
                raise ConflictError(f"rollout {rollout_id} is busy on another server; look again",
                                    {"rollout_id": rollout_id})  # fmt: skip
            time.sleep(0.05)
        try:
            current = self.store.get(rollout_id)
            if not current.settled:
                self.settle(current)
        finally:
            self.store.release(rollout_id, self.runner)

    def settle(self, record: RolloutRecord) -> None:
        """Deploy what the rollout's state asks for: the step's split, the candidate alone, or the champion."""
        actor = f"rollout {record.id}"
        if record.state in ("rolled_back", "aborted"):
            self.changes.deploy(record.pipeline, record.champion_version, actor=actor, action="rollback")
            self.store.settle(record.id, record.champion_version)
            return
        champion = self.changes.pipelines.get_version(record.pipeline, record.champion_version).spec
        if record.state == "promoted":
            spec = record.candidate_spec | {"name": record.pipeline}
        else:
            plan = RolloutPlan.model_validate(record.plan)
            spec = split_spec(record.pipeline, champion, record.candidate_spec, plan.steps[record.step], plan.key)
        version = self.changes.create_pipeline_version(spec, actor=actor)
        deployed = self.changes.pipelines.deployment(record.pipeline)
        if deployed is None or deployed.version != version.version:
            self.changes.deploy(record.pipeline, version.version, actor=actor, action="rollout")
        if record.state == "promoted":
            self._move_aliases(record, champion, actor)
        self.store.settle(record.id, version.version)

    def _move_aliases(self, record: RolloutRecord, champion: dict[str, Any], actor: str) -> None:
        alias = RolloutPlan.model_validate(record.plan).alias
        if not alias:
            return
        served = _models(champion)
        for name, version in _models(record.candidate_spec).items():
            if served.get(name) != version:
                self.changes.set_alias(name, version, alias, actor=actor)


def _models(spec: dict[str, Any]) -> dict[str, int]:
    """Model name → the version a definition pins (the first, where it pins several of one name)."""
    found: dict[str, int] = {}
    for ref in pinned_models(spec):
        name, version = ref.rsplit(":", 1)
        found.setdefault(name, int(version))
    return found
