"""The central side of edge sites (`edge/link.py`): log parts in, versions out, reports in.

- `POST /edge/logs?site=&pipeline=&date=&sha256=` (write): one sealed Parquet part of an edge's log. Its bytes must
  hash to `sha256` and read as Parquet; it is stored with a `site` column under `part-edge-{site}-{sha256}` (written
  under a temporary name, then renamed), so central SQL, monitors, rollouts and the dashboard see the rows, and a
  part sent twice is stored once.
- `GET /edge/pipelines/{name}` (read): the manifest of the deployed version (`edge/bundle.py`).
- `GET /edge/artifacts/{sha256}` (read): one artifact of the caller's workspace, verified before it is sent.
- `POST /edge/sites/{site}/report` (write): what a site serves, or why a version failed there (the audit trail).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import shutil
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from finalmile.edge.bundle import manifest_of
from finalmile.errors import BadRequestError
from finalmile.http.auth import Caller, Guards

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SHA = re.compile(r"^[0-9a-f]{64}$")


class SiteReport(BaseModel):
    """What an edge site reports home after trying a version: serving it, or why it failed."""

    pipeline: str
    version: int
    state: str = Field(pattern="^(serving|failed)$")
    error: str | None = None
    pushed: int = 0
    dropped: int = 0


def _checked(value: str, pattern: re.Pattern[str], field: str, what: str) -> str:
    if not pattern.match(value):
        raise BadRequestError(f"{field}: {what}, got {value[:80]!r}", {"field": field})
    return value


def store_part(logs_root: Path, site: str, pipeline: str, date: str, sha256: str, data: bytes) -> bool:
    """Store one edge log part with its site; False when this site's part is stored already."""
    if hashlib.sha256(data).hexdigest() != sha256:
        raise BadRequestError("sha256: the body does not hash to it (cut short in transit?)", {"field": "sha256"})
    directory = logs_root / f"pipeline={pipeline}" / f"date={date}"
    target = directory / f"part-edge-{site}-{sha256}.parquet"
    if target.exists():
        return False
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadRequestError(f"body: not a Parquet file ({exc})", {"field": "body"}) from None
    if "time" not in table.column_names or "request_id" not in table.column_names:
        raise BadRequestError("body: not an inference log part (no time or request_id)", {"field": "body"})
    if "site" in table.column_names:
        table = table.drop_columns(["site"])
    table = table.append_column("site", pa.array([site] * table.num_rows, pa.string()))
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".part-edge-{uuid.uuid4().hex}.parquet.tmp"
    pq.write_table(table, tmp)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, target)
    return True


def _bundle_archive(services: Any, name: str, version: int | None, wheels: bool, scratch: Path) -> Path:
    from finalmile.edge.bundle import write_bundle

    write_bundle(services, name, version, scratch / "bundle", wheels)
    archive = scratch / "bundle.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted((scratch / "bundle").iterdir()):
            tar.add(path, arcname=path.name)
    return archive


def router(guards: Guards) -> APIRouter:
    api = APIRouter(tags=["edge"])

    parquet = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}

    @api.post("/edge/logs", openapi_extra={"requestBody": {"required": True, "content": parquet}})
    async def push_logs(
        request: Request, site: str, pipeline: str, date: str, sha256: str, who: Caller = Depends(guards.write)
    ) -> dict[str, Any]:
        _checked(site, _NAME, "site", "letters, digits, '.', '_' or '-'")
        _checked(pipeline, _NAME, "pipeline", "a pipeline name")
        _checked(date, _DATE, "date", "YYYY-MM-DD")
        _checked(sha256, _SHA, "sha256", "64 lowercase hex digits")
        who.services.pipelines.get_version(pipeline)  # a 404 for a pipeline this workspace does not have
        data = await request.body()
        stored = store_part(Path(who.services.logs.root), site, pipeline, date, sha256, data)
        return {"stored": stored, "sha256": sha256}

    @api.get("/api/v1/pipelines/{name}/bundle", tags=["pipelines"])
    async def bundle_pipeline(
        name: str, version: int | None = None, wheels: bool = True, who: Caller = Depends(guards.write)
    ) -> FileResponse:
        """The edge bundle of `name` as a tar.gz, written here (the wheels collected by this server's pip)."""
        scratch = who.services.artifacts.scratch("bundle-")  # on a fresh home, `tmp/` does not exist yet
        try:
            archive = await asyncio.get_running_loop().run_in_executor(
                None, _bundle_archive, who.services, name, version, wheels, scratch
            )
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        cleanup = BackgroundTask(shutil.rmtree, scratch, ignore_errors=True)
        return FileResponse(
            archive, media_type="application/gzip", filename=f"{name}-bundle.tar.gz", background=cleanup
        )

    @api.get("/edge/pipelines/{name}")
    async def pipeline_manifest(name: str, who: Caller = Depends(guards.read)) -> dict[str, Any]:
        if who.services.pipelines.deployment(name) is None:
            raise BadRequestError(f"pipeline '{name}' is not deployed here", {"field": "name"})
        return manifest_of(who.services, name, None).to_json()

    @api.get("/edge/artifacts/{sha256}")
    async def artifact(sha256: str, who: Caller = Depends(guards.read)) -> FileResponse:
        _checked(sha256, _SHA, "sha256", "64 lowercase hex digits")
        if not who.services.metadata.artifact_in_use(sha256):
            raise BadRequestError(
                f"sha256: no model version of this workspace has artifact {sha256[:12]}", {"field": "sha256"}
            )
        return FileResponse(who.services.artifacts.verified_path(sha256), media_type="application/octet-stream")

    @api.post("/edge/sites/{site}/report")
    async def report(site: str, body: SiteReport, who: Caller = Depends(guards.write)) -> dict[str, Any]:
        _checked(site, _NAME, "site", "letters, digits, '.', '_' or '-'")
        what = f"{body.state}: {body.pipeline}:{body.version}" + (f" ({body.error})" if body.error else "")
        who.services.changed(who.actor, f"edge {body.state}", f"site {site}", None, what[:500])
        return {"recorded": True}

    return api
