"""Stored streams: their configuration, paused or not, and the status their runners (one per server process)
last reported."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from finalmile.registry.store import MetadataStore, row_named, stored_utc, utc_now
from finalmile.registry.tables import StreamRow
from finalmile.streaming.config import StreamConfig


@dataclass(frozen=True)
class StreamRecord:
    """A stream as stored; `status` is what a runner reported at `status_at` (None before it first ran)."""

    config: StreamConfig
    paused: bool
    created_by: str
    updated_at: datetime
    status: dict[str, Any] | None
    status_at: datetime | None

    @property
    def name(self) -> str:
        return self.config.name

    def payload(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "config": self.config.model_dump(mode="json"),
            "paused": self.paused,
            "created_by": self.created_by,
            "updated_at": self.updated_at.isoformat(),
            "status": self.status,
            "status_at": self.status_at.isoformat() if self.status_at else None,
        }


class StreamStore:
    """Apply (create or replace), pause, resume, delete, and the runners' status reports."""

    def __init__(self, metadata: MetadataStore) -> None:
        self._sessions = metadata.sessions

    def apply(self, config: StreamConfig, actor: str) -> tuple[StreamRecord | None, StreamRecord]:
        """Store `config` under its name; returns what was there before (None) and what is there now."""
        with self._sessions.begin() as s:
            row = s.execute(select(StreamRow).where(StreamRow.name == config.name)).scalar_one_or_none()
            before = _record(row) if row is not None else None
            if row is None:
                row = StreamRow(name=config.name, paused=False)
                s.add(row)
            row.config, row.created_by, row.updated_at = config.model_dump(mode="json"), actor, utc_now()
            s.flush()
            return before, _record(row)

    def all(self) -> list[StreamRecord]:
        with self._sessions() as s:
            return [_record(r) for r in s.execute(select(StreamRow).order_by(StreamRow.name)).scalars()]

    def get(self, name: str) -> StreamRecord:
        with self._sessions() as s:
            return _record(row_named(s, StreamRow, name, "stream", "name"))

    def set_paused(self, name: str, paused: bool) -> StreamRecord:
        with self._sessions.begin() as s:
            row = row_named(s, StreamRow, name, "stream", "name")
            row.paused, row.updated_at = paused, utc_now()
            s.flush()
            return _record(row)

    def delete(self, name: str) -> StreamRecord:
        with self._sessions.begin() as s:
            row = row_named(s, StreamRow, name, "stream", "name")
            record = _record(row)
            s.delete(row)
            return record

    def report(self, name: str, status: dict[str, Any]) -> None:
        """A runner's counters, kept per consumer (every server process runs one): the stream's status adds them
        up. A stream deleted meanwhile is ignored."""
        with self._sessions.begin() as s:
            query = select(StreamRow).where(StreamRow.name == name).with_for_update()
            row = s.execute(query).scalar_one_or_none()
            if row is not None:
                now = utc_now()
                consumers = dict((row.status or {}).get("consumers", {}))
                consumers[status["consumer"]] = status | {"reported_at": now.isoformat()}
                row.status, row.status_at = combined(consumers, now), now


LIVE_S = 30.0
"""A consumer that has not reported for this long is no longer counted as running (its counts still add up)."""
_KEPT = 20
_SUMMED = ("received", "processed", "logged_before", "failures", "dead_lettered")


def combined(consumers: dict[str, dict[str, Any]], now: datetime) -> dict[str, Any]:
    """The stream's status from its consumers' reports: counts summed over all of them (each since it started),
    the rate over the live ones, the lag and last error as the newest report says."""
    newest = sorted(consumers.values(), key=lambda c: str(c["reported_at"]), reverse=True)[:_KEPT]
    live = [c for c in newest if (now - datetime.fromisoformat(c["reported_at"])).total_seconds() < LIVE_S]
    errors = [c["last_error"] for c in newest if c.get("last_error")]
    return {k: sum(int(c.get(k) or 0) for c in newest) for k in _SUMMED} | {
        "messages_per_s": round(sum(float(c.get("messages_per_s") or 0) for c in live), 1),
        "lag": newest[0].get("lag"),
        "last_error": errors[0] if errors else None,
        "state": "running" if any(c.get("state") == "running" for c in live) else "stopped",
        "live_consumers": len(live),
        "consumers": {c["consumer"]: c for c in newest},
    }


def _record(row: StreamRow) -> StreamRecord:
    return StreamRecord(
        StreamConfig.model_validate(row.config),
        row.paused,
        row.created_by,
        stored_utc(row.updated_at),
        row.status,
        stored_utc(row.status_at) if row.status_at else None,
    )
