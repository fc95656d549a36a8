"""The management REST API (`/api/v1`), V2 health and metadata, and OpenAPI documents for every route.

The inference routes are declared here too, so they appear in the OpenAPI document (and work through FastAPI);
`FinalmileApp` answers them directly on the ASGI scope first, with the very same handlers.
"""

from __future__ import annotations

import asyncio
import json
import tarfile
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from finalmile import __version__
from finalmile.errors import FinalmileError, InvalidInputError
from finalmile.serving.api_monitors import add_monitor_routes
from finalmile.serving.app import InferenceHandlers, error_body
from finalmile.serving.codecs import ARROW_STREAM
from finalmile.serving.codecs import arrow as arrow_codec
from finalmile.serving.deployments import DeploymentConfig

if TYPE_CHECKING:
    from finalmile.client import Client
    from finalmile.serving.dataplane import DataPlane


class V2Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


class V2RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class V2InferenceRequest(BaseModel):
    id: str | None = None
    inputs: list[V2Tensor] = Field(min_length=1)
    outputs: list[V2RequestedOutput] | None = None
    parameters: dict[str, Any] | None = None


class QueryRequest(BaseModel):
    sql: str


class GroundTruthRequest(BaseModel):
    key: str = "request_id"
    rows: list[dict[str, Any]] = Field(min_length=1)


class DeployRequest(DeploymentConfig):
    version: int | None = None


_MODEL_FILE = File(..., description="the model file, or a .tar.gz of a model directory")
_SAMPLE_FILE = File(None, description="sample rows as Parquet")


def _infer_doc(schema: dict[str, Any], arrow: bool = False) -> dict[str, Any]:
    content = {"application/json": {"schema": schema}}
    if arrow:
        content[ARROW_STREAM] = {"schema": {"type": "string", "format": "binary"}}
    return {"requestBody": {"required": True, "content": content}}


def create_management_app(client: Client, dataplane: DataPlane) -> FastAPI:
    app = FastAPI(title="finalmile", version=__version__, docs_url="/docs", openapi_url="/openapi.json")
    handlers = InferenceHandlers(dataplane)

    @app.exception_handler(FinalmileError)
    async def _finalmile_error(_: Request, exc: FinalmileError) -> Response:
        return Response(error_body(exc), status_code=exc.status_code, media_type="application/json")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"error": "invalid request: " + "; ".join(problems), "detail": {"problems": problems}}, 422)

    async def run(fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kwargs))

    # -- Open Inference Protocol: health and metadata ---------------------------------------------------------------

    @app.get("/v2/health/live", tags=["v2"])
    async def live() -> dict[str, bool]:
        return {"live": dataplane.live()}

    @app.get("/v2/health/ready", tags=["v2"])
    async def ready() -> dict[str, bool]:
        return {"ready": dataplane.ready()}

    @app.get("/v2", tags=["v2"])
    async def server_metadata() -> dict[str, Any]:
        return dataplane.server_metadata()

    @app.get("/v2/models/{name}", tags=["v2"])
    async def model_metadata(name: str) -> dict[str, Any]:
        return dataplane.model_metadata(name)

    @app.get("/v2/models/{name}/versions/{version}", tags=["v2"])
    async def model_version_metadata(name: str, version: int) -> dict[str, Any]:
        return dataplane.model_metadata(name, version)

    @app.get("/v2/models/{name}/ready", tags=["v2"])
    async def model_ready(name: str) -> dict[str, Any]:
        dataplane.slot(name)
        return {"name": name, "ready": True}

    @app.get("/v2/models/{name}/versions/{version}/ready", tags=["v2"])
    async def model_version_ready(name: str, version: int) -> dict[str, Any]:
        dataplane.slot(name, version)
        return {"name": name, "ready": True}

    # -- inference (answered by FinalmileApp first; the same handlers) ---------------------------------------------

    async def answer(result: tuple[int, bytes, dict[str, str]]) -> Response:
        status, body, headers = result
        media = headers.pop("content-type", "application/json")
        return Response(body, status_code=status, headers=headers, media_type=media)

    v2_doc = _infer_doc(_inline_refs(V2InferenceRequest.model_json_schema()))
    records_doc = _infer_doc({"type": "array", "minItems": 1, "items": {"type": "object"}}, arrow=True)

    @app.post("/v2/models/{name}/infer", tags=["v2"], openapi_extra=v2_doc)
    async def v2_infer(name: str, request: Request) -> Response:
        return await answer(await handlers.v2(name, None, dict(request.headers), await request.body()))

    @app.post("/v2/models/{name}/versions/{version}/infer", tags=["v2"], openapi_extra=v2_doc)
    async def v2_version_infer(name: str, version: str, request: Request) -> Response:
        return await answer(await handlers.v2(name, version, dict(request.headers), await request.body()))

    @app.post("/pipelines/{name}/infer", tags=["inference"], openapi_extra=records_doc)
    async def records_infer(name: str, request: Request) -> Response:
        return await answer(await handlers.records(name, dict(request.headers), await request.body()))

    # -- management -------------------------------------------------------------------------------------------------

    @app.get("/api/v1/models", tags=["models"])
    async def list_models() -> list[dict[str, Any]]:
        return [vars(m) for m in await run(client.models)]

    @app.get("/api/v1/models/{ref}", tags=["models"])
    async def get_model(ref: str) -> dict[str, Any]:
        return vars((await run(client.model, ref)).record)

    @app.post("/api/v1/models/{name}", tags=["models"])
    async def upload_model(
        name: str,
        file: UploadFile = _MODEL_FILE,
        framework: str | None = Form(None),
        alias: str | None = Form(None),
        runtime: str = Form("auto"),
        tags: str | None = Form(None, description="JSON object of tags"),
        model_schema: str | None = Form(None, alias="schema", description="JSON schema of inputs/outputs"),
        sample: UploadFile | None = _SAMPLE_FILE,
    ) -> dict[str, Any]:
        try:
            tag_map = json.loads(tags) if tags else None
            schema_map = json.loads(model_schema) if model_schema else None
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"tags/schema: not valid JSON ({exc})") from None
        with tempfile.TemporaryDirectory() as tmp:
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
            mv = await run(
                client.upload_model,
                name,
                source,
                framework=framework,
                alias=alias,
                runtime=runtime,
                sample=sample_table,
                tags=tag_map,
                schema=schema_map,
            )
        return vars(mv.record)

    @app.get("/api/v1/pipelines", tags=["pipelines"])
    async def list_pipelines() -> list[str]:
        return await run(client.pipelines)

    @app.get("/api/v1/pipelines/{name}", tags=["pipelines"])
    async def get_pipeline(name: str) -> dict[str, Any]:
        versions = await run(client._pipelines.list_versions, name)
        deployed = {d.name: d for d in await run(client._pipelines.deployments)}.get(name)
        return {
            "name": name,
            "versions": [vars(v) for v in versions],
            "deployment": vars(deployed) if deployed else None,
        }

    @app.post("/api/v1/pipelines", tags=["pipelines"])
    async def create_pipeline_version(spec: dict[str, Any]) -> dict[str, Any]:
        return vars(await run(client.create_pipeline_version, spec))

    @app.post("/api/v1/pipelines/{name}/deploy", tags=["pipelines"])
    async def deploy(name: str, body: DeployRequest) -> dict[str, Any]:
        config = DeploymentConfig.model_validate(body.model_dump(exclude={"version"}))
        return vars(await run(client.deploy_pipeline, name, body.version, config))

    @app.post("/api/v1/pipelines/{name}/undeploy", tags=["pipelines"])
    async def undeploy(name: str) -> dict[str, str]:
        await run(client.undeploy_pipeline, name)
        return {"name": name, "status": "undeployed"}

    @app.post("/api/v1/query", tags=["logs"])
    async def query(body: QueryRequest) -> Response:
        table = await run(client.query, body.sql)
        return Response(table.to_json(orient="records", date_format="iso"), media_type="application/json")

    @app.get("/api/v1/pipelines/{name}/logs", tags=["logs"])
    async def logs(
        request: Request,
        name: str,
        limit: int | None = Query(100, ge=1, le=10_000_000),
        version: int | None = None,
        variant: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        columns: str | None = None,
    ) -> Response:
        """Log rows, newest first, from `start` (ISO 8601, inclusive) to `end` (exclusive), optionally only the
        comma-separated `columns`: JSON records, or an Arrow IPC stream when the request accepts one."""
        chosen = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
        table = await run(client.pipeline_logs, name, start, end, limit, version, variant, chosen)
        if ARROW_STREAM in request.headers.get("accept", ""):
            return Response(arrow_codec.encode(table), media_type=ARROW_STREAM)
        return Response(table.to_pandas().to_json(orient="records", date_format="iso"), media_type="application/json")

    @app.post("/api/v1/pipelines/{name}/ground_truth", tags=["logs"])
    async def ground_truth(name: str, body: GroundTruthRequest) -> dict[str, int]:
        try:
            rows = pa.Table.from_pylist(body.rows)
        except (pa.ArrowException, ValueError, TypeError) as exc:
            raise InvalidInputError(f"rows: the labels do not form a table: {exc}") from None
        receipt = await run(client.add_ground_truth, name, rows, body.key)
        return vars(receipt)

    add_monitor_routes(app, client, run)

    @app.get("/api/v1/deployments", tags=["pipelines"])
    async def deployments() -> list[dict[str, Any]]:
        return [
            vars(d) | {"serving": dataplane.ready(d.name, d.version)} for d in await run(client._pipelines.deployments)
        ]

    return app


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """Pydantic puts nested models under `$defs`, which mean nothing once embedded in an OpenAPI operation."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return dict(resolve(schema))


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
