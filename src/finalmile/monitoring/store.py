"""Monitors, results, alerts and action runs in the metadata database (SQLite or PostgreSQL)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from finalmile.errors import ConflictError, MonitorNotFound, NotFoundError
from finalmile.monitoring.config import MonitorConfig, Status
from finalmile.monitoring.windows import MonitorResult
from finalmile.registry.store import MetadataStore, stored_utc, utc_now, valid_key
from finalmile.registry.tables import ActionRunRow, AlertRow, MonitorResultRow, MonitorRow


@dataclass(frozen=True)
class SavedMonitor:
    """A stored monitor: its config, whether it runs, and where its next window ends."""

    id: int
    config: MonitorConfig
    enabled: bool
    next_window_end: datetime
    created_at: datetime


@dataclass(frozen=True)
class AlertRecord:
    """A window whose status crossed a threshold: what the webhook and the alerts API send."""

    id: int
    monitor: str
    level: str
    value: float | None
    group: str
    window_start: datetime
    window_end: datetime
    evidence: dict[str, Any]
    created_at: datetime
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    raised_by: str = "monitor"
    """`monitor`, or `store` for the store's own alerts (`monitor` is then their subject, `evidence` what happened)."""

    @property
    def open(self) -> bool:
        """Nobody has acknowledged it yet."""
        return self.acknowledged_by is None

    def payload(self) -> dict[str, Any]:
        """The JSON a webhook receives."""
        return {
            "alert_id": self.id,
            "monitor": self.monitor,
            "level": self.level,
            "value": self.value,
            "group": self.group,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "evidence": self.evidence,
            "created_at": self.created_at.isoformat(),
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": self.acknowledged_at.isoformat() if self.acknowledged_at else None,
            "raised_by": self.raised_by,
        }


class MonitorStore:
    """Monitors, their results, alerts and actions taken, in the metadata database."""

    def __init__(self, metadata: MetadataStore) -> None:
        self._sessions = metadata.sessions

    def create(self, config: MonitorConfig, first_window_end: datetime) -> SavedMonitor:
        try:
            with self._sessions.begin() as s:
                row = MonitorRow(
                    name=config.name,
                    pipeline=config.pipeline,
                    config=config.model_dump(mode="json"),
                    enabled=True,
                    next_window_end=first_window_end,
                    created_at=utc_now(),
                )
                s.add(row)
                s.flush()
                return _saved(row)
        except sa_exc.IntegrityError:
            raise ConflictError(f"a monitor named '{config.name}' exists already", {"name": config.name}) from None

    def get(self, name: str) -> SavedMonitor:
        with self._sessions() as s:
            row = s.scalar(select(MonitorRow).where(MonitorRow.name == name))
            if row is None:
                raise MonitorNotFound(name)
            return _saved(row)

    def all(self, pipeline: str | None = None) -> list[SavedMonitor]:
        with self._sessions() as s:
            query = select(MonitorRow).order_by(MonitorRow.name)
            if pipeline is not None:
                query = query.where(MonitorRow.pipeline == pipeline)
            return [_saved(r) for r in s.scalars(query)]

    def set_enabled(self, name: str, enabled: bool) -> None:
        with self._sessions.begin() as s:
            row = s.scalar(select(MonitorRow).where(MonitorRow.name == name).with_for_update())
            if row is None:
                raise MonitorNotFound(name)
            row.enabled = enabled

    def delete(self, name: str) -> None:
        with self._sessions.begin() as s:
            row = s.scalar(select(MonitorRow).where(MonitorRow.name == name))
            if row is None:
                raise MonitorNotFound(name)
            for table in (ActionRunRow, AlertRow, MonitorResultRow):
                for child in s.scalars(select(table).where(table.monitor_id == row.id)):
                    s.delete(child)
            s.delete(row)

    def record(
        self, monitor: SavedMonitor, results: list[MonitorResult], next_window_end: datetime, alert_levels: set[str]
    ) -> list[AlertRecord]:
        """Store a run's results and move the monitor on, in one transaction (a crash repeats the run, never skips
        it); results at `alert_levels` also become alerts, which are returned."""
        alerts = []
        with self._sessions.begin() as s:
            row = s.get(MonitorRow, monitor.id, with_for_update=True)
            if row is None or stored_utc(row.next_window_end) != stored_utc(monitor.next_window_end):
                return []  # deleted, or another process has just computed these windows
            now = utc_now()
            for r in results:
                result = MonitorResultRow(
                    monitor_id=row.id,
                    window_start=r.window_start,
                    window_end=r.window_end,
                    group=r.group,
                    rows=r.rows,
                    score=r.score,
                    status=r.status,
                    evidence=r.evidence,
                    computed_at=now,
                )
                s.add(result)
                if r.status in alert_levels:
                    s.flush()
                    alert = AlertRow(
                        monitor_id=row.id, result_id=result.id, level=r.status, value=r.score, created_at=now
                    )
                    s.add(alert)
                    s.flush()
                    alerts.append(
                        AlertRecord(
                            alert.id,
                            row.name,
                            r.status,
                            r.score,
                            r.group,
                            r.window_start,
                            r.window_end,
                            r.evidence,
                            now,
                        )
                    )
            row.next_window_end = next_window_end
        return alerts

    def results(self, name: str) -> list[MonitorResult]:
        monitor = self.get(name)
        with self._sessions() as s:
            rows = s.scalars(
                select(MonitorResultRow)
                .where(MonitorResultRow.monitor_id == monitor.id)
                .order_by(MonitorResultRow.window_end, MonitorResultRow.group)
            )
            return [
                MonitorResult(
                    stored_utc(r.window_start),
                    stored_utc(r.window_end),
                    r.rows,
                    r.score,
                    cast(Status, r.status),
                    r.group,
                    r.evidence,
                )
                for r in rows
            ]

    def alerts(self, name: str | None = None) -> list[AlertRecord]:
        """Alerts, oldest first: the monitors' (`name`: one monitor's), and the store's own, named by subject."""
        with self._sessions() as s:
            query = (
                select(AlertRow, MonitorResultRow, MonitorRow.name)
                .outerjoin(MonitorResultRow, MonitorResultRow.id == AlertRow.result_id)
                .outerjoin(MonitorRow, MonitorRow.id == AlertRow.monitor_id)
                .order_by(AlertRow.id)
            )
            if name is not None:
                query = query.where(MonitorRow.name == name)
            return [_alert(a, r, monitor) for a, r, monitor in s.execute(query)]

    def alerts_with_actions(self, name: str | None = None) -> list[dict[str, Any]]:
        """Alerts as people read them: each with what its monitor's actions did."""
        taken = self.actions(name)
        return [
            a.payload()
            | {
                "actions": [
                    {"action": t["action"], "outcome": t["outcome"], "detail": t["detail"], "at": t["at"].isoformat()}
                    for t in taken
                    if t["alert_id"] == a.id
                ]
            }
            for a in self.alerts(name)
        ]

    def raise_alert(self, subject: str, level: str, detail: dict[str, Any]) -> AlertRecord:
        """An alert no monitor raised (a log file set aside as corrupt): it names its subject and what happened."""
        with self._sessions.begin() as s:
            row = AlertRow(subject=subject[:200], detail=detail, level=level, value=None, created_at=utc_now())
            s.add(row)
            s.flush()
            return _alert(row, None, None)

    def acknowledge(self, alert_id: int, actor: str) -> AlertRecord:
        """Mark an alert seen by `actor` (the first acknowledgement stands); a 404 for an unknown id."""
        with self._sessions.begin() as s:
            row = s.get(AlertRow, alert_id) if valid_key(alert_id) else None
            if row is None:
                raise NotFoundError(f"no alert with id {alert_id}", {"alert_id": alert_id})
            if row.acknowledged_by is None:
                row.acknowledged_by, row.acknowledged_at = actor, utc_now()
        return next(a for a in self.alerts() if a.id == alert_id)

    def last_action(self, monitor: SavedMonitor, action: str) -> datetime | None:
        """When `action` last ran for this monitor (cooldowns count from there; skipped runs do not count)."""
        with self._sessions() as s:
            at = s.scalar(
                select(ActionRunRow.created_at)
                .where(
                    ActionRunRow.monitor_id == monitor.id,
                    ActionRunRow.action == action,
                    ActionRunRow.outcome != "cooldown",
                )
                .order_by(ActionRunRow.id.desc())
                .limit(1)
            )
            return stored_utc(at) if at is not None else None

    def record_action(self, monitor: SavedMonitor, alert: AlertRecord, action: str, outcome: str, detail: str) -> None:
        with self._sessions.begin() as s:
            s.add(
                ActionRunRow(
                    monitor_id=monitor.id,
                    alert_id=alert.id,
                    action=action,
                    outcome=outcome,
                    detail=detail,
                    created_at=utc_now(),
                )
            )

    def actions(self, name: str | None = None) -> list[dict[str, Any]]:
        with self._sessions() as s:
            query = (
                select(ActionRunRow, MonitorRow.name)
                .join(MonitorRow, MonitorRow.id == ActionRunRow.monitor_id)
                .order_by(ActionRunRow.id)
            )
            if name is not None:
                query = query.where(MonitorRow.name == name)
            return [
                {
                    "monitor": monitor,
                    "alert_id": r.alert_id,
                    "action": r.action,
                    "outcome": r.outcome,
                    "detail": r.detail,
                    "at": stored_utc(r.created_at),
                }
                for r, monitor in s.execute(query)
            ]


def _saved(row: MonitorRow) -> SavedMonitor:
    return SavedMonitor(
        row.id,
        MonitorConfig.model_validate(row.config),
        row.enabled,
        stored_utc(row.next_window_end),
        stored_utc(row.created_at),
    )


def _alert(a: AlertRow, r: MonitorResultRow | None, monitor: str | None) -> AlertRecord:
    created = stored_utc(a.created_at)
    return AlertRecord(
        a.id,
        monitor or a.subject or "",
        a.level,
        a.value,
        r.group if r is not None else "",
        stored_utc(r.window_start) if r is not None else created,
        stored_utc(r.window_end) if r is not None else created,
        r.evidence if r is not None else (a.detail or {}),
        created,
        a.acknowledged_by,
        stored_utc(a.acknowledged_at) if a.acknowledged_at else None,
        "monitor" if a.monitor_id is not None else "store",
    )
