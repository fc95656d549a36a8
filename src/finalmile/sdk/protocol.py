"""The verbs every client speaks, embedded or remote: the handles (`Pipeline`) call only these, and a test holds
`Client` and `RemoteClient` to the same names and parameters, so the two cannot drift apart."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from finalmile.backends.config import DeploymentConfig
from finalmile.jobs.connections import ConnectionRecord
from finalmile.jobs.store import JobRecord, RunRecord
from finalmile.pipelines.store import PipelineVersionRecord


class ClientProtocol(Protocol):
    """What `finalmile.Client()` and `finalmile.Client(url=...)` both do."""

    def close(self) -> None: ...

    def upload_model(
        self,
        name: str,
        source: Any,
        framework: str | None = None,
        schema: Any = None,
        sample: Any = None,
        alias: str | None = None,
        tags: dict[str, str] | None = None,
        runtime: str = "auto",
    ) -> Any: ...

    def model(self, ref: str) -> Any: ...

    def models(self) -> list[Any]: ...

    def build_pipeline(self, name: str) -> Any: ...

    def pipeline(self, name: str, version: int | None = None) -> Any: ...

    def pipelines(self) -> list[str]: ...

    def pipeline_versions(self, name: str) -> list[PipelineVersionRecord]: ...

    def create_pipeline_version(self, spec: dict[str, Any]) -> PipelineVersionRecord: ...

    def deploy_pipeline(self, name: str, version: int | None, config: DeploymentConfig) -> PipelineVersionRecord: ...

    def undeploy_pipeline(self, name: str) -> None: ...

    def infer_pipeline(self, name: str, table: pa.Table) -> Any: ...

    def infer_file(
        self,
        name: str,
        source: str | Path,
        output: str | Path,
        batch_size: int = 10_000,
        log: bool = False,
        progress: bool = True,
        backend: str = "local",
    ) -> Any: ...

    def query(self, sql: str) -> Any: ...

    def pipeline_logs(
        self,
        name: str,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
        version: int | None = None,
        variant: str | None = None,
        columns: list[str] | None = None,
    ) -> pa.Table: ...

    def export_logs(
        self, name: str, path: str | Path, start: datetime | None = None, end: datetime | None = None
    ) -> int: ...

    def add_ground_truth(self, name: str, frame: Any, key: str = "request_id") -> Any: ...

    def build_stream(
        self, name: str, pipeline: Any, source: dict[str, Any], sink: dict[str, Any], **options: Any
    ) -> dict[str, Any]: ...

    def streams(self) -> list[dict[str, Any]]: ...

    def upload_job(self, name: str, path: str | Path, requirements: str | Path | None = None) -> JobRecord: ...

    def schedule_job(
        self,
        name: str,
        cron: str | None = None,
        tz: str = "UTC",
        timeout_s: float = 3600.0,
        retries: int = 0,
        deadline_s: float = 300.0,
    ) -> JobRecord: ...

    def run_job(self, name: str, wait: bool = True) -> RunRecord: ...

    def job_runs(self, name: str, limit: int = 20) -> list[RunRecord]: ...

    def jobs(self) -> list[JobRecord]: ...

    def delete_job(self, name: str) -> None: ...

    def create_connection(self, name: str, type: str, url: str) -> ConnectionRecord: ...

    def connections(self) -> list[ConnectionRecord]: ...

    def delete_connection(self, name: str) -> None: ...
