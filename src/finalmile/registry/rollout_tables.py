"""The metadata tables of bringing a candidate in: replays and rollouts (beside `tables.py`, on its `Base`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from finalmile.registry.tables import Base


class ReplayRow(Base):
    """A replay: logged traffic of a pipeline run through a candidate, and the comparison's summary."""

    __tablename__ = "replays"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(200))
    candidate: Mapped[str] = mapped_column(String(400))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    sample: Mapped[float | None] = mapped_column(Float, nullable=True)
    seed: Mapped[int] = mapped_column(Integer)
    segment_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    status: Mapped[str] = mapped_column(String(20))
    rows: Mapped[int] = mapped_column(Integer)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RolloutRow(Base):
    """A progressive rollout: the candidate beside the champion in a split whose weights it moves step by step."""

    __tablename__ = "rollouts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(200), index=True)
    candidate: Mapped[str] = mapped_column(String(400))
    candidate_spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    champion_version: Mapped[int] = mapped_column(Integer)
    """The pipeline version serving when the rollout began: what a rollback deploys again."""
    plan: Mapped[dict[str, Any]] = mapped_column(JSON)
    """Steps, step length, gates, `min_rows`, the sticky key, what long holds do (`rollouts.plan.RolloutPlan`)."""
    state: Mapped[str] = mapped_column(String(20))
    step: Mapped[int] = mapped_column(Integer)
    holds: Mapped[int] = mapped_column(Integer)
    """Evaluations of the current step that held (the next one's attempt number)."""
    step_started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    serving_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """The pipeline version deployed for the current state, once it is deployed."""
    settled: Mapped[bool] = mapped_column(Boolean)
    """Whether the deployment the state asks for is in place (a server killed between the two converges on it)."""
    claimed_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class RolloutEventRow(Base):
    """One transition of a rollout with its evidence; an evaluation's (step, attempt) is unique, so with several
    servers each is recorded once."""

    __tablename__ = "rollout_events"
    __table_args__ = (UniqueConstraint("rollout_id", "step", "attempt", name="uq_rollout_events_evaluation"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """The evaluation's number at its step; None for a person's action."""
    decision: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON)
    weight: Mapped[float] = mapped_column(Float)
    """The candidate's share of traffic (percent) after the transition."""
    actor: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
