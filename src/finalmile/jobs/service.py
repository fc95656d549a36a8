"""Jobs as the composition root offers them: upload, schedule, run now, and the scheduler's tick; each change
audited."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from finalmile.config import FinalmileSettings
from finalmile.errors import InvalidInputError
from finalmile.jobs.runs import check_code, check_schedule, execute, run_due, runner_name
from finalmile.jobs.store import JobRecord, JobStore, RunRecord


class Jobs:
    """A workspace's jobs. `audit(actor, action, target, before, after)` records a change; a job's child process
    opens `settings`' store in `workspace`; `secrets()` lists what its captured log must never show."""

    def __init__(
        self,
        store: JobStore,
        audit: Callable[..., None],
        user: str,
        settings: FinalmileSettings,
        workspace: str,
        secrets: Callable[[], list[str]],
    ) -> None:
        self.store = store
        self._audit = audit
        self._user = user
        self._settings = settings
        self._workspace = workspace
        self._secrets = secrets

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
        for field, value, low in (("timeout_s", timeout_s, 1), ("retries", retries, 0), ("deadline_s", deadline_s, 1)):
            if value < low:
                raise InvalidInputError(f"{field}: must be at least {low}, got {value}", {"field": field})
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
        args = (self.store, job, code, run, self._env(), self._secrets(), self._settings.job_lost_after_s)
        thread = threading.Thread(target=execute, args=args, name=f"job-{job.name}", daemon=True)
        thread.start()
        return thread

    def _env(self) -> dict[str, str]:
        """A job's child process opens this workspace of this store, and reads connections with this key."""
        env = dict(os.environ) | {
            "FINALMILE_HOME": str(self._settings.home),
            "FINALMILE_DATABASE_URL": self._settings.resolved_database_url(),
            "FINALMILE_WORKSPACE": self._workspace,
        }
        if self._settings.secret_key:
            env["FINALMILE_SECRET_KEY"] = self._settings.secret_key
        return env


def _read(path: str | Path, field: str) -> bytes:
    source = Path(path)
    try:
        return source.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"{field}: {source}: {exc.strerror}", {"field": field}) from None
