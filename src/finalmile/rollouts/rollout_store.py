"""Stored rollouts and their transitions. The state lives here, not in a server: a server killed mid-rollout is
replaced by one that reads where it was, and several servers agree on who evaluates a step through two guards — a
lease on the rollout row (so only one computes) and a unique (rollout, step, attempt) on each evaluation's event (so
only one records, whatever happens to leases)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy import exc as sa_exc

from finalmile.errors import NotFoundError
from finalmile.registry.rollout_tables import RolloutEventRow, RolloutRow
from finalmile.registry.store import MetadataStore, stored_utc, utc_now, valid_key

ACTIVE = ("running", "paused")
"""States in which a rollout holds its pipeline (another rollout of it is refused)."""


@dataclass(frozen=True)
class RolloutEvent:
    """One transition: an evaluation's decision (with `attempt`) or a person's action, with its evidence."""

    step: int
    attempt: int | None
    decision: str
    reason: str
    evidence: dict[str, Any]
    weight: float
    actor: str
    at: datetime


@dataclass(frozen=True)
class RolloutRecord:
    """A rollout as stored; `state` running, paused, promoted, rolled_back or aborted."""

    id: int
    pipeline: str
    candidate: str
    candidate_spec: dict[str, Any]
    champion_version: int
    plan: dict[str, Any]
    state: str
    step: int
    holds: int
    step_started_at: datetime
    due_at: datetime
    serving_version: int | None
    settled: bool
    reason: str | None
    created_by: str
    created_at: datetime
    finished_at: datetime | None
    events: tuple[RolloutEvent, ...] = ()

    @property
    def weight(self) -> float:
        """The candidate's share of traffic now, in percent."""
        return share(self.state, self.step, self.plan["steps"])


def share(state: str, step: int, steps: list[float]) -> float:
    """The candidate's share of traffic (percent) in a state at a step: all once promoted, none once it ended
    otherwise, the step's while it runs or is paused."""
    if state == "promoted":
        return 100.0
    return float(steps[step]) if state in ACTIVE else 0.0


class RolloutStore:
    """Rollouts of one workspace, newest last."""

    def __init__(self, metadata: MetadataStore) -> None:
        self._sessions = metadata.sessions

    def create(self, pipeline: str, candidate: str, spec: dict[str, Any], champion: int, plan: dict[str, Any],
               actor: str, now: datetime) -> RolloutRecord:  # fmt: skip
        with self._sessions.begin() as s:
            row = RolloutRow(
                pipeline=pipeline, candidate=candidate[:400], candidate_spec=spec, champion_version=champion,
                plan=plan, state="running", step=0, holds=0, step_started_at=now,
                due_at=now + timedelta(seconds=plan["step_every_s"]), serving_version=None, settled=False,
                created_by=actor, created_at=now,
            )  # fmt: skip
            s.add(row)
            s.flush()
            s.add(
                _event(row.id, 0, None, "start", f"{candidate} at {plan['steps'][0]:g}%", {}, plan["steps"][0], actor)
            )
            s.flush()
            return self._record(s, row)

    def get(self, rollout_id: int) -> RolloutRecord:
        with self._sessions() as s:
            return self._record(s, self._row(s, rollout_id))

    def all(self, pipeline: str | None = None) -> list[RolloutRecord]:
        with self._sessions() as s:
            query = select(RolloutRow).order_by(RolloutRow.id)
            if pipeline is not None:
                query = query.where(RolloutRow.pipeline == pipeline)
            return [self._record(s, r, events=False) for r in s.scalars(query)]

    def active(self, pipeline: str) -> RolloutRecord | None:
        with self._sessions() as s:
            row = s.scalars(
                select(RolloutRow).where(RolloutRow.pipeline == pipeline, RolloutRow.state.in_(ACTIVE))
            ).first()
            return self._record(s, row, events=False) if row is not None else None

    def pending(self, now: datetime) -> list[RolloutRecord]:
        """Rollouts a tick has work for: running ones due for evaluation, and any whose deployment is not in place."""
        with self._sessions() as s:
            query = select(RolloutRow).where(
                or_(RolloutRow.settled.is_(False), (RolloutRow.state == "running") & (RolloutRow.due_at <= now))
            )
            return [self._record(s, r, events=False) for r in s.scalars(query.order_by(RolloutRow.id))]

    def claim(self, rollout_id: int, runner: str, lease_s: float, now: datetime) -> bool:
        """Take the rollout's lease for `lease_s` (False while another runner holds it): one computes at a time."""
        with self._sessions.begin() as s:
            done: CursorResult[Any] = s.execute(  # type: ignore[assignment]
                update(RolloutRow)
                .where(RolloutRow.id == rollout_id)
                .where(or_(RolloutRow.claimed_until.is_(None), RolloutRow.claimed_until < now))
                .values(claimed_by=runner, claimed_until=now + timedelta(seconds=lease_s))
            )
            return bool(done.rowcount)

    def release(self, rollout_id: int, runner: str) -> None:
        with self._sessions.begin() as s:
            s.execute(
                update(RolloutRow)
                .where(RolloutRow.id == rollout_id, RolloutRow.claimed_by == runner)
                .values(claimed_by=None, claimed_until=None)
            )

    def transition(
        self,
        was: RolloutRecord,
        event: RolloutEvent,
        changes: dict[str, Any],
    ) -> RolloutRecord | None:
        """Record `event` and apply `changes` if the rollout is still as `was` says (state, step, holds); None when
        another runner or a person got there first. The deployment is then unsettled until `settle`."""
        try:
            with self._sessions.begin() as s:
                done: CursorResult[Any] = s.execute(  # type: ignore[assignment]
                    update(RolloutRow)
                    .where(
                        RolloutRow.id == was.id,
                        RolloutRow.state == was.state,
                        RolloutRow.step == was.step,
                        RolloutRow.holds == was.holds,
                    )  # fmt: skip
                    .values(**changes)
                )
                if not done.rowcount:
                    return None
                e = event
                s.add(_event(was.id, e.step, e.attempt, e.decision, e.reason, e.evidence, e.weight, e.actor, e.at))
                s.flush()
        except sa_exc.IntegrityError:  # this evaluation is recorded already (another server)
            return None
        return self.get(was.id)

    def settle(self, rollout_id: int, version: int) -> None:
        with self._sessions.begin() as s:
            s.execute(
                update(RolloutRow).where(RolloutRow.id == rollout_id).values(settled=True, serving_version=version)
            )

    @staticmethod
    def _row(s: Any, rollout_id: int) -> RolloutRow:
        row = s.get(RolloutRow, rollout_id) if valid_key(rollout_id) else None
        if row is None:
            raise NotFoundError(f"no rollout with id {rollout_id}", {"rollout_id": rollout_id})
        return row

    @staticmethod
    def _record(s: Any, row: RolloutRow, events: bool = True) -> RolloutRecord:
        found: tuple[RolloutEvent, ...] = ()
        if events:
            query = select(RolloutEventRow).where(RolloutEventRow.rollout_id == row.id).order_by(RolloutEventRow.id)
            found = tuple(
                RolloutEvent(e.step, e.attempt, e.decision, e.reason, e.evidence, e.weight, e.actor, stored_utc(e.at))
                for e in s.scalars(query)
            )
        return RolloutRecord(
            row.id, row.pipeline, row.candidate, row.candidate_spec, row.champion_version, row.plan, row.state,
            row.step, row.holds, stored_utc(row.step_started_at), stored_utc(row.due_at), row.serving_version,
            row.settled, row.reason, row.created_by, stored_utc(row.created_at),
            stored_utc(row.finished_at) if row.finished_at else None, found,
        )  # fmt: skip


def _event(rollout_id: int, step: int, attempt: int | None, decision: str, reason: str, evidence: dict[str, Any],
           weight: float, actor: str, at: datetime | None = None) -> RolloutEventRow:  # fmt: skip
    return RolloutEventRow(
        rollout_id=rollout_id, step=step, attempt=attempt, decision=decision, reason=reason[:4000],
        evidence=evidence, weight=weight, actor=actor[:200], at=at or utc_now(),
    )  # fmt: skip
