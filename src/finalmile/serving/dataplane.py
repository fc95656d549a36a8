"""The transport-free data plane: infer, readiness and metadata over a `Backend`. HTTP, the embedded SDK and file
inference all infer through it, so every request is batched, counted and logged the same way."""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa

from finalmile._version import __version__
from finalmile.backends.base import Backend, InferRequest, Target
from finalmile.errors import FinalmileError, NotReadyError, PipelineNotDeployed
from finalmile.pipelines.loaded import RequestResult
from finalmile.pipelines.store import PipelineStore
from finalmile.serving.codecs.v2 import DATATYPE_NAMES
from finalmile.serving.metrics import Metrics


class DataPlane:
    """Inference and metadata for one process, whatever the transport."""

    def __init__(self, backend: Backend, pipelines: PipelineStore, metrics: Metrics) -> None:
        self.backend = backend
        self.pipelines = pipelines
        self.metrics = metrics

    async def infer(self, request: InferRequest, target: Target | None = None) -> RequestResult:
        """One request, answered by `target` when the caller has resolved it already (`serving`), else by the
        deployment resolved here: once a request either way."""
        started = time.perf_counter()
        result = await (target or self.serving(request.pipeline, request.version)).infer(request)
        self.metrics.served(request.pipeline, request.table.num_rows, time.perf_counter() - started)
        return result

    async def infer_each(
        self, name: str, table: pa.Table, ids: list[str], log: bool = True, durable: bool = False
    ) -> list[RequestResult]:
        """Each row a request named by `ids` (a stream's batch of messages), run as one batch; see `Backend`."""
        started = time.perf_counter()
        results = await self.backend.infer_each(name, table, ids, log, durable)
        self.metrics.served(name, table.num_rows, time.perf_counter() - started)
        return results

    def answered(self, name: str, protocol: str, status: int) -> None:
        """Count one answer of an inference route (`http` transports' and gRPC's alike); a name that is not deployed
        is counted as `_unknown`, so callers cannot grow the metric's label values without bound (a 200 was served
        by its deployment: no need to ask)."""
        served = status == 200 or self.backend.serves(name)
        self.metrics.answered(name if served else "_unknown", protocol, status)

    def serving(self, name: str, version: int | None = None) -> Target:
        """The deployment serving `name`; 503 when the pipeline exists but is not deployed, 404 when it does not."""
        try:
            return self.backend.target(name, version)
        except PipelineNotDeployed:
            try:
                self.pipelines.get_version(name, version)
            except FinalmileError:
                raise PipelineNotDeployed(name, version) from None
            what = f"pipeline '{name}'" + (f" version {version}" if version is not None else "")
            raise NotReadyError(f"{what} exists but is not deployed", {"name": name, "version": version}) from None

    def live(self) -> bool:
        return True

    def ready(self, name: str | None = None, version: int | None = None) -> bool:
        if name is None:
            return True
        serving = self.backend.deployed().get(name)
        return serving is not None and (version is None or serving == version)

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "finalmile", "version": __version__, "extensions": ["binary_tensor_data"]}

    def model_metadata(self, name: str, version: int | None = None) -> dict[str, Any]:
        """V2 model metadata of a deployed pipeline: its inputs are the first model's, its outputs the last's."""
        serving = self.serving(name, version)
        schema = serving.input_schema

        def tensors(columns: list[Any]) -> list[dict[str, Any]]:
            out = []
            for c in columns:
                datatype = "BYTES" if c.dtype == "string" else DATATYPE_NAMES.get(c.dtype, "FP64")
                out.append({"name": c.name, "datatype": datatype, "shape": [-1, *c.shape]})
            return out

        return {
            "name": name,
            "versions": [str(serving.version)],
            "platform": "finalmile",
            "inputs": tensors(schema.inputs or []) if schema else [],
            "outputs": tensors(schema.outputs) if schema else [],
        }
