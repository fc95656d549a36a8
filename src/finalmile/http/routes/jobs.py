"""`/api/v1/jobs`: Python jobs with `main(ctx)`: upload (with requirements), schedule, run now, runs and logs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from pydantic import BaseModel, Field

from finalmile.config import MAX_DURATION_S
from finalmile.http.auth import Caller, Guards
from finalmile.http.routes import run
from finalmile.jobs.runs import MAX_JOB_TIMEOUT_S
from finalmile.jobs.store import MAX_CODE_BYTES, MAX_REQUIREMENTS_CHARS

_CODE = File(..., description="a .py file, or a .zip with main.py, defining main(ctx)")


class ScheduleRequest(BaseModel):
    """When a job runs: a cron expression read in `tz` (null: by hand only), and its limits."""

    model_config = {"extra": "forbid"}

    cron: str | None = Field(default=None, max_length=200)
    tz: str = Field(default="UTC", max_length=100)
    timeout_s: float = Field(default=3600.0, ge=1, le=MAX_JOB_TIMEOUT_S)
    retries: int = Field(default=0, ge=0, le=100)
    deadline_s: float = Field(default=300.0, ge=1, le=MAX_DURATION_S)


def router(guards: Guards) -> APIRouter:
    api = APIRouter(tags=["jobs"])

    @api.get("/api/v1/jobs")
    async def list_jobs(who: Caller = Depends(guards.read)) -> list[dict[str, Any]]:
        return [j.payload() for j in await run(who.services.jobs.store.all)]

    @api.get("/api/v1/jobs/{name}")
    async def get_job(name: str, who: Caller = Depends(guards.read)) -> dict[str, Any]:
        job, _ = await run(who.services.jobs.store.get, name)
        return dict(job.payload())

    @api.post("/api/v1/jobs/{name}", status_code=201)
    async def upload_job(
        name: str,
        file: UploadFile = _CODE,
        requirements: str | None = Form(None, max_length=MAX_REQUIREMENTS_CHARS, description="pip requirements"),
        who: Caller = Depends(guards.write),
    ) -> dict[str, Any]:
        """Store (or replace) a job's code; its schedule stays as it was."""
        code = await file.read(MAX_CODE_BYTES + 1)  # one byte over the limit is enough for the store to refuse
        upload = who.services.jobs.upload_code
        return dict((await run(upload, name, file.filename or "", code, requirements, who.actor)).payload())

    @api.put("/api/v1/jobs/{name}/schedule")
    async def schedule_job(name: str, body: ScheduleRequest, who: Caller = Depends(guards.write)) -> dict[str, Any]:
        fields = body.model_dump()
        return dict((await run(who.services.jobs.schedule, name, **fields, actor=who.actor)).payload())

    @api.delete("/api/v1/jobs/{name}")
    async def delete_job(name: str, who: Caller = Depends(guards.write)) -> dict[str, str]:
        await run(who.services.jobs.delete, name, who.actor)
        return {"name": name, "status": "deleted"}

    @api.post("/api/v1/jobs/{name}/runs", status_code=202)
    async def start_run(name: str, who: Caller = Depends(guards.write)) -> dict[str, Any]:
        """Start a run now; it goes on in the background (poll `GET .../runs/{id}` for its outcome and log)."""
        record, _ = await run(who.services.jobs.start, name, who.actor)
        return dict(record.payload())

    @api.get("/api/v1/jobs/{name}/runs")
    async def list_runs(
        name: str, limit: int = Query(20, ge=1, le=1000), who: Caller = Depends(guards.read)
    ) -> list[dict[str, Any]]:
        """A job's runs, newest first, each with its captured log (connection secrets masked)."""
        await run(who.services.jobs.store.get, name)  # a 404 for an unknown job, not an empty list
        return [r.payload() for r in await run(who.services.jobs.store.runs, name, limit)]

    @api.get("/api/v1/jobs/{name}/runs/{run_id}")
    async def get_run(name: str, run_id: int, who: Caller = Depends(guards.read)) -> dict[str, Any]:
        return dict((await run(who.services.jobs.store.run, run_id, name)).payload())

    return api
