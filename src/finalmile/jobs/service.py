"""Jobs as the composition root offers them: upload, schedule, run now, and the scheduler's tick; each change
audited."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from finalmile.config import MAX_DURATION_S, FinalmileSettings
from finalmile.errors import InvalidInputError
from finalmile.jobs.runs import (
    MAX_JOB_TIMEOUT_S,
    JobChild,
    check_code,
    check_schedule,
    execute,
    run_due,
    runner_name,
)
from finalmile.jobs.store import JobRecord, JobStore, RunRecord


class Gateway(Protocol):
    """How a job's child reaches its workspace (`http.server.JobGateway`): a URL and a secret that acts as
    `user` with `role` in `workspace`, valid while the block runs."""

    def __call__(self, user: str, workspace: str, role: str) -> AbstractContextManager[tuple[str, str]]: ...

    def close(self) -> None: ...


class Jobs:
    """A workspace's jobs. `audit(actor, action, target, before, after)` records a change; `role_of(user)` is the
    role a run of the job `user` uploaded acts with; `gateway()` the way its child reaches the API (none: no job can
    run); `connections()` this workspace's connections in clear and `secrets()` what its log must never show."""

    def __init__(
        self,
        store: JobStore,
        audit: Callable[..., None],
        user: str,
        settings: FinalmileSettings,
        workspace: str,
        connections: Callable[[], dict[str, str]],
        secrets: Callable[[], list[str]],
        role_of: Callable[[str], str],
        gateway: Callable[[], Gateway | None],
    ) -> None:
        self.store = store
        self._audit = audit
        self._user = user
        self._settings = settings
        self._workspace = workspace
        self._connections = connections
        self._secrets = secrets
        self._role_of = role_of
        self._gateway = gateway

    def upload(
        self, name: str, path: str | Path, requirements: str | Path | None = None, actor: str | None = None
    ) -> JobRecord:
        """Store a job's code: a `.py` file or a `.zip` with `main.py`, each defining `main(ctx)`;
        `requirements`, a pip requirements file, is installed for it (once per distinct file)."""
        code = _read(path, "file")
        text = _read(requirements, "requirements").decode(errors="replace") if requirements is not None else None
        return self.upload_code(name, Path(path).name, code, text, actor)

    def upload_code(
        self, name: str, filename: str, code: bytes, requirements: str | None = None, actor: str | None = None
    ) -> JobRecord:
        """`upload` from bytes (the HTTP route's): `filename` says whether `code` is a .py file or a .zip."""
        kind = Path(filename).suffix.lstrip(".").lower()
        check_code(kind, code)
        record = self.store.upload(name, kind, code, actor or self._user, requirements)
        self._audit(actor or self._user, "upload job", f"job {name}", None, filename)
        return record

    def schedule(
        self,
        name: str,
        cron: str | None,
        tz: str = "UTC",
        timeout_s: float = 3600.0,
        retries: int = 0,
        deadline_s: float = 300.0,
        actor: str | None = None,
    ) -> JobRecord:
        """Run `name` on a cron schedule read in `tz` (None: by hand only). A slot missed by more than
        `deadline_s` (every server down, say) is skipped, not run late."""
        if cron is not None:
            check_schedule(cron, tz)
        bounds = (("timeout_s", timeout_s, 1, MAX_JOB_TIMEOUT_S), ("retries", retries, 0, 100),
                  ("deadline_s", deadline_s, 1, MAX_DURATION_S))  # fmt: skip
        for field, value, low, high in bounds:
            if not low <= value <= high:  # NaN fails this too
                raise InvalidInputError(f"{field}: must be between {low} and {high:g}, got {value}", {"field": field})
        record = self.store.schedule(name, cron, tz, timeout_s, retries, deadline_s)
        self._audit(actor or self._user, "schedule job", f"job {name}", None, f"{cron} {tz}")
        return record

    def delete(self, name: str, actor: str | None = None) -> None:
        """Forget a job, its schedule and its code (its past runs stay, as history)."""
        self.store.delete(name)
        self._audit(actor or self._user, "delete job", f"job {name}", name, None)

    def run(self, name: str) -> RunRecord:
        """Run `name` now, in a child process, and wait for it (retries and timeout as scheduled)."""
        run, thread = self.start(name)
        thread.join()
        return self.store.run(run.id)

    def start(self, name: str, actor: str | None = None) -> tuple[RunRecord, threading.Thread]:
        """Start a run of `name` now, in the background: the run as claimed (`running`) and its thread."""
        job, code = self.store.get(name)
        run = self.store.claim(name, None, runner_name())
        assert run is not None  # a run by hand has no slot, so it never collides
        self._audit(actor or self._user, "run job", f"job {name}", None, f"run {run.id}")
        return run, self._start(job, code, run)

    def run_due(self, now: datetime | None = None) -> list[threading.Thread]:
        """Start every scheduled job whose latest slot is due and unclaimed (by this or another server)."""
        return run_due(self.store, now or datetime.now(UTC), self._start, self._settings.job_lost_after_s)

    def _start(self, job: JobRecord, code: bytes, run: RunRecord) -> threading.Thread:
        thread = threading.Thread(target=self._execute, args=(job, code, run), name=f"job-{job.name}", daemon=True)
        thread.start()
        return thread

    def _execute(self, job: JobRecord, code: bytes, run: RunRecord) -> None:
        """The run in its sandbox, its `ctx.client` acting as the uploader (with their current role) in this
        workspace through the gateway: no store, no database URL and no key of the server's reaches the child."""
        try:
            gateway = self._gateway()
            if gateway is None:
                raise InvalidInputError("jobs run from a finalmile.Client or a server, not bare Services")
            role = self._role_of(job.created_by)
            with gateway(job.created_by, self._workspace, role) as (url, secret):
                env = {
                    "FINALMILE_URL": url,
                    "FINALMILE_TOKEN": secret,
                    "FINALMILE_WORKSPACE": self._workspace,
                    "FINALMILE_JOB_CONNECTIONS": json.dumps(self._connections()),
                }
                child = JobChild(env, self._settings.home, self._settings.sandbox)
                execute(self.store, job, code, run, child, self._secrets(), self._settings.job_lost_after_s)
        except Exception as exc:  # no gateway, an uploader no longer a member: the run fails saying why
            self.store.finish(run.id, "failed", None, f"{type(exc).__name__}: {getattr(exc, 'message', exc)}\n", 0)


def _read(path: str | Path, field: str) -> bytes:
    source = Path(path)
    try:
        return source.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"{field}: {source}: {exc.strerror}", {"field": field}) from None
