"""Stored replays: what ran (the candidate's pinned definition, the range, the sample) and what it found."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
from sqlalchemy import select

from finalmile.errors import NotFoundError
from finalmile.registry.rollout_tables import ReplayRow
from finalmile.registry.store import MetadataStore, stored_utc, utc_now, valid_key


@dataclass(frozen=True)
class ReplayRecord:
    """One replay: `status` running, finished or failed; `summary` the comparison (see `rollouts.replay`)."""

    id: int
    pipeline: str
    candidate: str
    spec: dict[str, Any]
    start: datetime | None
    end: datetime | None
    sample: float | None
    seed: int
    segment_by: str | None
    status: str
    rows: int
    summary: dict[str, Any] | None
    error: str | None
    created_by: str
    created_at: datetime


class ReplayStore:
    """Replays of one workspace, newest last."""

    def __init__(self, metadata: MetadataStore) -> None:
        self._sessions = metadata.sessions

    def create(
        self,
        pipeline: str,
        candidate: str,
        spec: dict[str, Any],
        start: datetime | None,
        end: datetime | None,
        sample: float | None,
        seed: int,
        segment_by: str | None,
        actor: str,
    ) -> ReplayRecord:
        with self._sessions.begin() as s:
            row = ReplayRow(
                pipeline=pipeline,
                candidate=candidate[:400],
                spec=spec,
                start=start,
                end=end,
                sample=sample,
                seed=seed,
                segment_by=segment_by,
                status="running",
                rows=0,
                created_by=actor,
                created_at=utc_now(),
            )
            s.add(row)
            s.flush()
            return _record(row)

    def finish(self, replay_id: int, rows: int, summary: dict[str, Any]) -> ReplayRecord:
        with self._sessions.begin() as s:
            row = self._row(s, replay_id)
            row.status, row.rows, row.summary = "finished", rows, summary
            return _record(row)

    def fail(self, replay_id: int, error: str) -> None:
        with self._sessions.begin() as s:
            row = self._row(s, replay_id)
            row.status, row.error = "failed", error[:2000]

    def get(self, replay_id: int) -> ReplayRecord:
        with self._sessions() as s:
            return _record(self._row(s, replay_id))

    def all(self, pipeline: str | None = None) -> list[ReplayRecord]:
        with self._sessions() as s:
            query = select(ReplayRow).order_by(ReplayRow.id)
            if pipeline is not None:
                query = query.where(ReplayRow.pipeline == pipeline)
            return [_record(r) for r in s.scalars(query)]

    def table(self) -> pa.Table:
        """The `replays` SQL view: one row per replay, its headline figures as columns."""
        rows = []
        for r in self.all():
            summary = r.summary or {}
            rows.append(
                {
                    "id": r.id,
                    "pipeline": r.pipeline,
                    "candidate": r.candidate,
                    "status": r.status,
                    "rows": r.rows,
                    "agreement": summary.get("agreement"),
                    "mean_difference": (summary.get("difference") or {}).get("mean"),
                    "psi": summary.get("psi"),
                    "created_by": r.created_by,
                    "created_at": r.created_at,
                }
            )
        schema = pa.schema(
            [
                ("id", pa.int64()),
                ("pipeline", pa.string()),
                ("candidate", pa.string()),
                ("status", pa.string()),
                ("rows", pa.int64()),
                ("agreement", pa.float64()),
                ("mean_difference", pa.float64()),
                ("psi", pa.float64()),
                ("created_by", pa.string()),
                ("created_at", pa.timestamp("us", tz="UTC")),
            ]
        )
        return pa.Table.from_pylist(rows, schema=schema)

    @staticmethod
    def _row(s: Any, replay_id: int) -> ReplayRow:
        row = s.get(ReplayRow, replay_id) if valid_key(replay_id) else None
        if row is None:
            raise NotFoundError(f"no replay with id {replay_id}", {"replay_id": replay_id})
        return row


def _record(row: ReplayRow) -> ReplayRecord:
    return ReplayRecord(
        row.id,
        row.pipeline,
        row.candidate,
        row.spec,
        stored_utc(row.start) if row.start else None,
        stored_utc(row.end) if row.end else None,
        row.sample,
        row.seed,
        row.segment_by,
        row.status,
        row.rows,
        row.summary,
        row.error,
        row.created_by,
        stored_utc(row.created_at),
    )
