"""Stored jobs and their runs. A scheduled slot is claimed by inserting its run row: (job, slot) is unique, so
with several `finalmile serve` processes exactly one of them runs each slot."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import select, update

from finalmile.errors import InvalidInputError, NotFoundError
from finalmile.registry.store import MetadataStore, check_plain_name, row_named, stored_utc, utc_now, valid_key
from finalmile.registry.tables import JobRow, JobRunRow

MAX_CODE_BYTES = 20 * 1024 * 1024
MAX_REQUIREMENTS_CHARS = 100_000


@dataclass(frozen=True)
class JobRecord:
    """A job as stored (its code left out)."""

    name: str
    kind: str
    cron: str | None
    tz: str
    timeout_s: float
    retries: int
    deadline_s: float
    created_by: str
    updated_at: datetime
    requirements: str | None = None

    def payload(self) -> dict[str, Any]:
        return vars(self) | {"updated_at": self.updated_at.isoformat()}

    @classmethod
    def from_payload(cls, body: dict[str, Any]) -> JobRecord:
        return cls(**body | {"updated_at": datetime.fromisoformat(body["updated_at"])})


@dataclass(frozen=True)
class RunRecord:
    """One run: `slot` is the scheduled time it was for (None when started by hand)."""

    id: int
    job: str
    slot: datetime | None
    status: str
    attempts: int
    started_at: datetime
    finished_at: datetime | None
    exit_code: int | None
    log: str
    runner: str

    @property
    def duration_s(self) -> float | None:
        return (self.finished_at - self.started_at).total_seconds() if self.finished_at else None

    def payload(self) -> dict[str, Any]:
        return vars(self) | {
            "slot": self.slot.isoformat() if self.slot else None,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "duration_s": self.duration_s,
        }

    @classmethod
    def from_payload(cls, body: dict[str, Any]) -> RunRecord:
        """A run as a server's JSON gives it back (the remote client's)."""
        when = {k: datetime.fromisoformat(body[k]) if body[k] else None for k in ("slot", "started_at", "finished_at")}
        fields = {k: body[k] for k in ("id", "job", "status", "attempts", "exit_code", "log", "runner")}
        return cls(**fields | when)


class JobStore:
    """Jobs (code, schedule, limits) and their runs."""

    def __init__(self, metadata: MetadataStore) -> None:
        self._sessions = metadata.sessions

    def upload(self, name: str, kind: str, code: bytes, actor: str, requirements: str | None = None) -> JobRecord:
        """Store (or replace) a job's code and requirements; its schedule and limits stay as they were."""
        check_plain_name(name, "name")
        if kind not in ("py", "zip"):
            raise InvalidInputError(f"file: give a .py file or a .zip with main.py, not {kind!r}", {"field": "file"})
        if not code or len(code) > MAX_CODE_BYTES:
            raise InvalidInputError(f"file: give 1 byte to {MAX_CODE_BYTES:,} bytes of code", {"field": "file"})
        if requirements is not None and (len(requirements) > MAX_REQUIREMENTS_CHARS or "\x00" in requirements):
            raise InvalidInputError(
                f"requirements: give pip requirements text of at most {MAX_REQUIREMENTS_CHARS:,} characters",
                {"field": "requirements"},
            )
        with self._sessions.begin() as s:
            row = s.execute(select(JobRow).where(JobRow.name == name)).scalar_one_or_none()
            if row is None:
                row = JobRow(name=name, tz="UTC", timeout_s=3600.0, retries=0, deadline_s=300.0)
                s.add(row)
            row.kind, row.code, row.created_by, row.updated_at = kind, code, actor, utc_now()
            row.requirements = (requirements or "").strip() or None
            s.flush()
            return _job(row)

    def schedule(
        self, name: str, cron: str | None, tz: str, timeout_s: float, retries: int, deadline_s: float
    ) -> JobRecord:
        with self._sessions.begin() as s:
            row = row_named(s, JobRow, name, "job", "name")
            row.cron, row.tz, row.timeout_s, row.retries, row.deadline_s = cron, tz, timeout_s, retries, deadline_s
            row.updated_at = utc_now()
            s.flush()
            return _job(row)

    def get(self, name: str) -> tuple[JobRecord, bytes]:
        with self._sessions() as s:
            row = row_named(s, JobRow, name, "job", "name")
            return _job(row), row.code

    def all(self) -> list[JobRecord]:
        with self._sessions() as s:
            return [_job(r) for r in s.execute(select(JobRow).order_by(JobRow.name)).scalars()]

    def delete(self, name: str) -> None:
        with self._sessions.begin() as s:
            s.delete(row_named(s, JobRow, name, "job", "name"))

    def claim(self, job: str, slot: datetime | None, runner: str, status: str = "running") -> RunRecord | None:
        """A run row for `slot`, or None when another scheduler has claimed that slot already."""
        now = utc_now()
        try:
            with self._sessions.begin() as s:
                row = JobRunRow(
                    job=job, slot=slot, status=status, attempts=0, started_at=now, heartbeat_at=now, log="",
                    runner=runner, finished_at=now if status != "running" else None,
                )  # fmt: skip
                s.add(row)
                s.flush()
                return _run(row)
        except sa_exc.IntegrityError:
            return None

    def running(self, job: str, stale_after_s: float) -> list[RunRecord]:
        """Runs of `job` still going; one whose runner stopped beating for `stale_after_s` is marked `lost`."""
        cutoff = utc_now() - timedelta(seconds=stale_after_s)
        with self._sessions.begin() as s:
            s.execute(
                update(JobRunRow)
                .where(JobRunRow.job == job, JobRunRow.status == "running", JobRunRow.heartbeat_at < cutoff)
                .values(status="lost", finished_at=utc_now())
            )
            rows = s.execute(select(JobRunRow).where(JobRunRow.job == job, JobRunRow.status == "running")).scalars()
            return [_run(r) for r in rows]

    def beat(self, run_id: int, attempts: int) -> None:
        with self._sessions.begin() as s:
            s.execute(update(JobRunRow).where(JobRunRow.id == run_id).values(heartbeat_at=utc_now(), attempts=attempts))

    def finish(self, run_id: int, status: str, exit_code: int | None, log: str, attempts: int) -> RunRecord:
        with self._sessions.begin() as s:
            row = s.get(JobRunRow, run_id)
            assert row is not None
            row.status, row.exit_code, row.log, row.attempts = status, exit_code, log[-200_000:], attempts
            row.finished_at = utc_now()
            s.flush()
            return _run(row)

    def run(self, run_id: int, job: str | None = None) -> RunRecord:
        """One run by id (of `job`, when given): a 404 naming `run` otherwise."""
        with self._sessions() as s:
            row = s.get(JobRunRow, run_id) if valid_key(run_id) else None
            if row is None or (job is not None and row.job != job):
                raise NotFoundError(f"run {run_id} of job {job!r} not found", {"field": "run"})
            return _run(row)

    def runs(self, job: str, limit: int = 50) -> list[RunRecord]:
        with self._sessions() as s:
            query = select(JobRunRow).where(JobRunRow.job == job).order_by(JobRunRow.id.desc()).limit(limit)
            return [_run(r) for r in s.execute(query).scalars()]


def _job(row: JobRow) -> JobRecord:
    return JobRecord(
        row.name, row.kind, row.cron, row.tz, row.timeout_s, row.retries, row.deadline_s, row.created_by,
        stored_utc(row.updated_at), row.requirements,
    )  # fmt: skip


def _run(row: JobRunRow) -> RunRecord:
    return RunRecord(
        row.id, row.job, stored_utc(row.slot) if row.slot else None, row.status, row.attempts,
        stored_utc(row.started_at), stored_utc(row.finished_at) if row.finished_at else None, row.exit_code,
        row.log, row.runner,
    )  # fmt: skip
