"""`Client(url=...)`: the same verbs as the embedded client, carried out by a finalmile server over HTTP."""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from finalmile.arrow.files import write_table
from finalmile.arrow.frames import to_arrow
from finalmile.arrow.ipc import from_ipc
from finalmile.backends.config import DeploymentConfig
from finalmile.errors import BadRequestError, InvalidModelError, RemoteError, ServerUnreachable
from finalmile.jobs.connections import ConnectionRecord
from finalmile.jobs.store import JobRecord, RunRecord
from finalmile.logs.ground_truth import GroundTruthReceipt
from finalmile.pipelines.spec import PipelineSpec
from finalmile.pipelines.store import PipelineVersionRecord
from finalmile.runtimes import detect_framework
from finalmile.schema import Schema
from finalmile.sdk.pipelines import Pipeline
from finalmile.serving.codecs import ARROW_STREAM
from finalmile.serving.codecs import arrow as arrow_codec


@dataclass
class RemoteModelVersion:
    """A registered version as the server describes it (predicting runs on the server, through a pipeline)."""

    record: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.record[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def ref(self) -> str:
        return f"{self.record['name']}:{self.record['version']}"

    def __repr__(self) -> str:
        return f"RemoteModelVersion({self.ref}, framework={self.framework}, runtime={self.runtime})"


@dataclass
class RemoteResult:
    """A remote inference's rows and the provenance headers the server sent with them."""

    table: pa.Table
    headers: dict[str, str]

    def metadata(self) -> dict[str, Any]:
        """Provenance as the server sent it in headers (distinct values; V2 responses carry it per row)."""
        return {
            "request_id": self.headers.get("finalmile-request-id", ""),
            "pipeline_version": int(self.headers["finalmile-pipeline-version"]),
            "variants": [v for v in self.headers.get("finalmile-variants", "").split(",") if v],
            "model_versions": [m for m in self.headers.get("finalmile-model-versions", "").split(",") if m],
        }


DEPLOY_TIMEOUT_S = 600.0
"""How long a deploy may take to answer: a server waits up to `FINALMILE_RAY_START_TIMEOUT_S` (300 s) for Ray
replicas to start, and says why they did not; the client must not give up first."""


class RemoteClient:
    """`Client(url=...)`: the embedded client's verbs, carried out by a finalmile server over HTTP."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 120.0) -> None:
        """`token` (default: `FINALMILE_TOKEN`) is sent as `Authorization: Bearer …` on every request."""
        self.url = url.rstrip("/")
        token = token if token is not None else os.environ.get("FINALMILE_TOKEN")
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RemoteClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"cannot reach the finalmile server at {self.url}: {exc}") from None
        if response.status_code >= 400:
            try:
                body = response.json()
                raise RemoteError(response.status_code, body.get("error", response.text), body.get("detail"))
            except (ValueError, AttributeError):
                raise RemoteError(response.status_code, response.text) from None
        return response

    # -- access (the token's workspace) -------------------------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        """The user, workspace and role this client's token acts as."""
        return dict(self._call("GET", "/api/v1/whoami").json())

    def create_token(
        self, role: str, name: str = "", expires: str | None = None, user: str | None = None
    ) -> dict[str, Any]:
        """A new token in this workspace (owners only); its `token` secret is in this answer only."""
        body = {"role": role, "name": name, "expires": expires, "user": user}
        return dict(self._call("POST", "/api/v1/tokens", json=body).json())

    def tokens(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/v1/tokens").json())

    def revoke_token(self, token_id: int) -> dict[str, Any]:
        return dict(self._call("DELETE", f"/api/v1/tokens/{token_id}").json())

    # -- models -------------------------------------------------------------------------------------------------

    def upload_model(
        self,
        name: str,
        source: Any,
        framework: str | None = None,
        schema: Schema | dict[str, Any] | None = None,
        sample: Any = None,
        alias: str | None = None,
        tags: dict[str, str] | None = None,
        runtime: str = "auto",
    ) -> RemoteModelVersion:
        """Upload like the embedded client; in-memory models are serialised here in their framework's format."""
        with tempfile.TemporaryDirectory() as tmp:
            path = _as_file(source, framework, Path(tmp))
            data: dict[str, str] = {"runtime": runtime}
            for key, value in (("framework", framework), ("alias", alias)):
                if value is not None:
                    data[key] = value
            if tags:
                data["tags"] = json.dumps(tags)
            if schema is not None:
                data["schema"] = json.dumps(schema.model_dump(mode="json") if isinstance(schema, Schema) else schema)
            files: dict[str, Any] = {"file": (path.name, path.read_bytes())}
            if sample is not None:
                buffer = io.BytesIO()
                pq.write_table(to_arrow(sample)[0], buffer)
                files["sample"] = ("sample.parquet", buffer.getvalue())
            return RemoteModelVersion(self._call("POST", f"/api/v1/models/{name}", data=data, files=files).json())

    def model(self, ref: str) -> RemoteModelVersion:
        return RemoteModelVersion(self._call("GET", f"/api/v1/models/{ref}").json())

    def models(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/v1/models").json())

    # -- pipelines ----------------------------------------------------------------------------------------------

    def build_pipeline(self, name: str) -> Pipeline:
        return Pipeline(self, name)

    def pipeline(self, name: str, version: int | None = None) -> Pipeline:
        versions = self._call("GET", f"/api/v1/pipelines/{name}").json()["versions"]
        chosen = versions[-1] if version is None else next((v for v in versions if v["version"] == version), None)
        if chosen is None:
            raise RemoteError(404, f"pipeline '{name}' version {version} not found")
        return Pipeline(self, name, PipelineSpec.model_validate(chosen["spec"]).steps)

    def pipelines(self) -> list[str]:
        return list(self._call("GET", "/api/v1/pipelines").json())

    def pipeline_versions(self, name: str) -> list[PipelineVersionRecord]:
        return [_pipeline_record(v) for v in self._call("GET", f"/api/v1/pipelines/{name}").json()["versions"]]

    def create_pipeline_version(self, spec: dict[str, Any]) -> PipelineVersionRecord:
        return _pipeline_record(self._call("POST", "/api/v1/pipelines", json=spec).json())

    def deploy_pipeline(self, name: str, version: int | None, config: DeploymentConfig) -> PipelineVersionRecord:
        body = config.model_dump() | {"version": version}
        path = f"/api/v1/pipelines/{name}/deploy"
        return _pipeline_record(self._call("POST", path, json=body, timeout=DEPLOY_TIMEOUT_S).json())

    def undeploy_pipeline(self, name: str) -> None:
        self._call("POST", f"/api/v1/pipelines/{name}/undeploy")

    def infer_pipeline(self, name: str, table: pa.Table) -> RemoteResult:
        response = self._call(
            "POST",
            f"/pipelines/{name}/infer",
            content=arrow_codec.encode(table),
            headers={"content-type": ARROW_STREAM},
        )
        return RemoteResult(arrow_codec.decode(response.content), dict(response.headers))

    def infer_file(
        self,
        name: str,
        source: str | Path,
        output: str | Path,
        batch_size: int = 10_000,
        log: bool = False,
        progress: bool = True,
        backend: str = "local",
    ) -> Any:
        """File inference reads and writes local files next to the store; a server is reached per request."""
        raise BadRequestError(
            "infer_file runs where the store is: use finalmile.Client() there (or `finalmile infer-file`), "
            f"or send batches to {self.url}/pipelines/{name}/infer"
        )

    # -- logs -------------------------------------------------------------------------------------------------------

    def build_stream(
        self, name: str, pipeline: str | Pipeline, source: dict[str, Any], sink: dict[str, Any], **options: Any
    ) -> dict[str, Any]:
        target = pipeline.name if isinstance(pipeline, Pipeline) else pipeline
        body = {"name": name, "pipeline": target, "source": source, "sink": sink} | options
        result: dict[str, Any] = self._call("POST", "/api/v1/streams", json=body).json()
        return result

    def streams(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/api/v1/streams").json()
        return result

    def query(self, sql: str) -> Any:
        import pandas as pd

        return pd.DataFrame(self._call("POST", "/api/v1/query", json={"sql": sql}).json())

    def pipeline_logs(
        self,
        name: str,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
        version: int | None = None,
        variant: str | None = None,
        columns: list[str] | None = None,
    ) -> pa.Table:
        params: dict[str, Any] = {"limit": limit or 10_000_000, "version": version, "variant": variant}
        params |= {"start": start and start.isoformat(), "end": end and end.isoformat()}
        params["columns"] = ",".join(columns) if columns else None
        response = self._call(
            "GET",
            f"/api/v1/pipelines/{name}/logs",
            params={k: v for k, v in params.items() if v is not None},
            headers={"accept": ARROW_STREAM},
        )
        return from_ipc(response.content)  # may be empty: not a request to validate

    def export_logs(
        self, name: str, path: str | Path, start: datetime | None = None, end: datetime | None = None
    ) -> int:
        table = self.pipeline_logs(name, start, end)
        table = table.take(pa.array(range(table.num_rows - 1, -1, -1)))  # oldest first, as the embedded export
        write_table(table, path)
        return table.num_rows

    def add_ground_truth(self, name: str, frame: Any, key: str = "request_id") -> Any:
        rows = to_arrow(frame)[0].to_pylist()
        body = self._call("POST", f"/api/v1/pipelines/{name}/ground_truth", json={"key": key, "rows": rows}).json()
        return GroundTruthReceipt(**body)

    # -- jobs and connections ---------------------------------------------------------------------------------

    def upload_job(self, name: str, path: str | Path, requirements: str | Path | None = None) -> JobRecord:
        source = Path(path)
        data = {"requirements": Path(requirements).read_text()} if requirements is not None else {}
        files = {"file": (source.name, source.read_bytes())}
        return JobRecord.from_payload(self._call("POST", f"/api/v1/jobs/{name}", data=data, files=files).json())

    def schedule_job(
        self,
        name: str,
        cron: str | None = None,
        tz: str = "UTC",
        timeout_s: float = 3600.0,
        retries: int = 0,
        deadline_s: float = 300.0,
    ) -> JobRecord:
        body = {"cron": cron, "tz": tz, "timeout_s": timeout_s, "retries": retries, "deadline_s": deadline_s}
        return JobRecord.from_payload(self._call("PUT", f"/api/v1/jobs/{name}/schedule", json=body).json())

    def run_job(self, name: str, wait: bool = True, poll_s: float = 0.5) -> RunRecord:
        """Start a run on the server; with `wait`, poll until it has finished."""
        run = RunRecord.from_payload(self._call("POST", f"/api/v1/jobs/{name}/runs").json())
        while wait and run.status == "running":
            time.sleep(poll_s)
            run = RunRecord.from_payload(self._call("GET", f"/api/v1/jobs/{name}/runs/{run.id}").json())
        return run

    def job_runs(self, name: str, limit: int = 20) -> list[RunRecord]:
        body = self._call("GET", f"/api/v1/jobs/{name}/runs", params={"limit": limit}).json()
        return [RunRecord.from_payload(r) for r in body]

    def jobs(self) -> list[JobRecord]:
        return [JobRecord.from_payload(j) for j in self._call("GET", "/api/v1/jobs").json()]

    def delete_job(self, name: str) -> None:
        self._call("DELETE", f"/api/v1/jobs/{name}")

    def create_connection(self, name: str, type: str, url: str) -> ConnectionRecord:
        body = {"name": name, "type": type, "url": url}
        return ConnectionRecord.from_payload(self._call("POST", "/api/v1/connections", json=body).json())

    def connections(self) -> list[ConnectionRecord]:
        return [ConnectionRecord.from_payload(c) for c in self._call("GET", "/api/v1/connections").json()]

    def delete_connection(self, name: str) -> None:
        self._call("DELETE", f"/api/v1/connections/{name}")


def _pipeline_record(body: dict[str, Any]) -> PipelineVersionRecord:
    return PipelineVersionRecord(
        body["name"], body["version"], body["spec"], body["created_by"], datetime.fromisoformat(body["created_at"])
    )


def _as_file(source: Any, framework: str | None, tmp: Path) -> Path:
    """A file to send: paths as they are (directories as a tar.gz), in-memory models saved in their own format."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise InvalidModelError(f"{path}: no such file or directory")
        if path.is_dir():
            archive = tmp / f"{path.name}.tar.gz"
            with tarfile.open(archive, "w:gz") as tar:
                tar.add(path, arcname=path.name)
            return archive
        return path
    kind = framework or detect_framework(source)
    if kind == "sklearn":
        import joblib

        target = tmp / "model.joblib"
        joblib.dump(source, target)
    elif kind == "xgboost":
        target = tmp / "model.ubj"
        (source.get_booster() if hasattr(source, "get_booster") else source).save_model(target)
    elif kind == "lightgbm" and hasattr(source, "booster_"):
        import joblib

        target = tmp / "model.joblib"  # keeps the wrapper's class labels
        joblib.dump(source, target)
    elif kind == "lightgbm":
        target = tmp / "model.txt"
        source.save_model(target)
    elif kind == "onnx":
        target = tmp / "model.onnx"
        target.write_bytes(source.SerializeToString())
    else:
        raise InvalidModelError(
            f"a {kind} model in memory cannot be sent to a server: save it to a file (a .py file or a directory "
            "for Python models, TorchScript or .pt2 for PyTorch) and upload the path"
        )
    return target
