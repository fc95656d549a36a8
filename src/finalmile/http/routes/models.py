"""`/api/v1/models`: the registry — list, read, upload (a file, or a .tar.gz of a model directory)."""

from __future__ import annotations

import json
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, File, Form, UploadFile
from pydantic import BaseModel, Field

from finalmile.errors import InvalidInputError
from finalmile.http.auth import Caller, Guards
from finalmile.http.routes import run
from finalmile.registry.upload import hide_paths

_MODEL_FILE = File(..., description="the model file, or a .tar.gz of a model directory")
_SAMPLE_FILE = File(None, description="sample rows as Parquet")


class AliasRequest(BaseModel):
    """The version an alias points at."""

    model_config = {"extra": "forbid"}

    version: int = Field(ge=1)


def router(guards: Guards) -> APIRouter:
    api = APIRouter(tags=["models"])

    @api.get("/api/v1/models")
    async def list_models(who: Caller = Depends(guards.read)) -> list[dict[str, Any]]:
        return [vars(m) for m in await run(who.services.metadata.list_models)]

    @api.get("/api/v1/models/{ref}")
    async def get_model(ref: str, who: Caller = Depends(guards.read)) -> dict[str, Any]:
        return vars(await run(who.services.metadata.get_by_ref, ref))

    @api.get("/api/v1/models/{name}/versions")
    async def model_versions(name: str, who: Caller = Depends(guards.read)) -> list[dict[str, Any]]:
        """Every version of `name`, oldest first (a 404 for a model that does not exist)."""
        return [vars(v) for v in await run(who.services.metadata.list_versions, name)]

    @api.put("/api/v1/models/{name}/aliases/{alias}")
    async def set_alias(
        name: str, alias: str, body: AliasRequest, who: Caller = Depends(guards.write)
    ) -> dict[str, Any]:
        """Point `alias` (say `champion`) at a version, moving it if it pointed elsewhere."""
        return vars(await run(who.services.set_alias, name, body.version, alias, who.actor))

    @api.delete("/api/v1/models/{name}/aliases/{alias}")
    async def delete_alias(name: str, alias: str, who: Caller = Depends(guards.write)) -> dict[str, str]:
        await run(who.services.delete_alias, name, alias, who.actor)
        return {"name": name, "alias": alias, "status": "deleted"}

    @api.delete("/api/v1/models/{name}/versions/{version}")
    async def delete_model_version(name: str, version: int, who: Caller = Depends(guards.write)) -> dict[str, Any]:
        """Delete a version and its artifacts (unless another version shares them); a 409 while pinned."""
        await run(who.services.delete_model_version, name, version, who.actor)
        return {"name": name, "version": version, "status": "deleted"}

    @api.post("/api/v1/models/{name}")
    async def upload_model(
        name: str,
        file: UploadFile = _MODEL_FILE,
        framework: str | None = Form(None),
        alias: str | None = Form(None),
        runtime: str = Form("auto"),
        tags: str | None = Form(None, description="JSON object of tags"),
        model_schema: str | None = Form(None, alias="schema", description="JSON schema of inputs/outputs"),
        sample: UploadFile | None = _SAMPLE_FILE,
        who: Caller = Depends(guards.write),
    ) -> dict[str, Any]:
        tag_map = _json_field("tags", tags)
        schema_map = _json_field("schema", model_schema)
        with tempfile.TemporaryDirectory() as tmp, hide_paths(tmp):
            source = await _save_upload(file, Path(tmp))
            sample_table = None
            if sample is not None:
                import pyarrow.parquet as pq

                sample_path = Path(tmp) / "sample.parquet"
                sample_path.write_bytes(await sample.read())
                try:
                    sample_table = pq.read_table(sample_path)
                except Exception as exc:
                    raise InvalidInputError(f"sample: not a Parquet file ({exc})") from None
            record = await run(
                who.services.upload_model,
                name,
                source,
                isolated=True,
                actor=who.actor,
                framework=framework,
                alias=alias,
                runtime=runtime,
                sample=sample_table,
                tags=tag_map,
                schema=schema_map,
            )
        return vars(record)

    return api


def _json_field(field: str, text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{field}: not valid JSON ({exc.msg})", {"field": field}) from None


async def _save_upload(file: UploadFile, directory: Path) -> Path:
    filename = Path(file.filename or "model").name
    target = directory / filename
    target.write_bytes(await file.read())
    if filename.endswith((".tar.gz", ".tgz", ".tar")):
        unpacked = directory / "unpacked"
        try:
            with tarfile.open(target) as tar:
                tar.extractall(unpacked, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise InvalidInputError(f"{filename}: not a readable tar archive ({exc})") from None
        entries = list(unpacked.iterdir())
        return entries[0] if len(entries) == 1 and entries[0].is_dir() else unpacked
    return target
