"""Jobs and connections as the embedded client speaks them (the remote client speaks the same verbs over
`/api/v1/jobs` and `/api/v1/connections`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from finalmile.jobs.connections import ConnectionRecord
from finalmile.jobs.store import JobRecord, RunRecord

if TYPE_CHECKING:
    from finalmile.services import Services


class JobVerbs:
    """Mixed into `finalmile.Client`: each verb is the services' own, with the client's user as the actor."""

    services: Services

    def upload_job(self, name: str, path: str | Path, requirements: str | Path | None = None) -> JobRecord:
        """Store (or replace) a job: a `.py` file or a `.zip` with `main.py`, each defining `main(ctx)`;
        `requirements`, a pip requirements file, is installed for it once, beside the server's own packages."""
        return self.services.jobs.upload(name, path, requirements)

    def schedule_job(
        self,
        name: str,
        cron: str | None = None,
        tz: str = "UTC",
        timeout_s: float = 3600.0,
        retries: int = 0,
        deadline_s: float = 300.0,
    ) -> JobRecord:
        """Run `name` on a cron schedule read in `tz` (None: by hand only); every `finalmile serve` shares the
        schedule and each slot runs once. A slot missed by more than `deadline_s` is skipped, not run late."""
        return self.services.jobs.schedule(name, cron, tz, timeout_s, retries, deadline_s)

    def run_job(self, name: str, wait: bool = True) -> RunRecord:
        """Run `name` now, here, in a child process: the finished run (`wait`) or the run as started."""
        if wait:
            return self.services.jobs.run(name)
        return self.services.jobs.start(name)[0]

    def job_runs(self, name: str, limit: int = 20) -> list[RunRecord]:
        """`name`'s runs, newest first: slot, status, start, duration, exit code and the captured log."""
        self.services.jobs.store.get(name)  # a 404 for an unknown job, not an empty list
        return self.services.jobs.store.runs(name, limit)

    def job_run(self, name: str, run_id: int) -> RunRecord:
        return self.services.jobs.store.run(run_id, name)

    def job(self, name: str) -> JobRecord:
        return self.services.jobs.store.get(name)[0]

    def jobs(self) -> list[JobRecord]:
        return self.services.jobs.store.all()

    def delete_job(self, name: str) -> None:
        self.services.jobs.delete(name)

    def create_connection(self, name: str, type: str, url: str) -> ConnectionRecord:
        """Store a database, directory or broker URL under `name`, encrypted with FINALMILE_SECRET_KEY; jobs read
        it as `ctx.connections[name]`, lists show it masked."""
        return self.services.create_connection(name, type, url)

    def connections(self) -> list[ConnectionRecord]:
        return self.services.connections.list()

    def delete_connection(self, name: str) -> None:
        self.services.delete_connection(name)
