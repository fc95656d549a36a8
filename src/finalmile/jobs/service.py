"""Jobs as the composition root offers them: upload, schedule, run now, and the scheduler's tick; each change
audited."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from finalmile.errors import InvalidInputError
from finalmile.jobs.runs import check_schedule, execute, run_due, runner_name
from finalmile.jobs.store import JobRecord, JobStore, RunRecord


class Jobs:
    """A workspace's jobs. `audit(actor, action, target, before, after)` records a change; `env()` is the
    environment a job's child process gets (the store and workspace it opens)."""

    def __init__(
        self, store: JobStore, audit: Callable[..., None], env: Callable[[], dict[str, str]], user: str
    ) -> None:
        self.store = store
        self._audit = audit
        self._env = env
        self._user = user

    def upload(self, name: str, path: str | Path, actor: str | None = None) -> JobRecord:
        """Store a job's code: a `.py` file or a `.zip` with `main.py`, each defining `main(ctx)`."""
        source = Path(path)
        try:
            code = source.read_bytes()
        except OSError as exc:
            raise InvalidInputError(f"file: {source}: {exc.strerror}", {"field": "file"}) from None
        record = self.store.upload(name, source.suffix.lstrip(".").lower(), code, actor or self._user)
        self._audit(actor or self._user, "upload job", f"job {name}", None, source.name)
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

    def run(self, name: str) -> RunRecord:
        """Run `name` now, in a child process, and wait for it (retries and timeout as scheduled)."""
        job, code = self.store.get(name)
        run = self.store.claim(name, None, runner_name())
        assert run is not None  # a run by hand has no slot, so it never collides
        return execute(self.store, job, code, run, self._env())

    def run_due(self, now: datetime | None = None) -> list[threading.Thread]:
        """Start every scheduled job whose latest slot is due and unclaimed (by this or another server)."""
        return run_due(self.store, self._env(), now or datetime.now(UTC))
