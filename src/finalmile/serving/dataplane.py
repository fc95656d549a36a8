"""The transport-free data plane: infer, readiness and metadata. HTTP (and later Ray) are thin adapters over it."""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa

from finalmile import __version__
from finalmile.errors import FinalmileError, NotReadyError
from finalmile.pipelines.executor import Batch
from finalmile.serving.deployments import DeploymentManager, LoadedPipeline, PipelineNotDeployed, RequestResult, Slot
from finalmile.serving.metrics import Metrics


class DataPlane:
    def __init__(self, deployments: DeploymentManager, metrics: Metrics | None = None) -> None:
        self.deployments = deployments
        self.metrics = metrics or Metrics()
        self._observers: dict[str, Any] = {}
        deployments.hooks.append(self._observe_steps)

    def _observe_steps(self, loaded: LoadedPipeline, batch: Batch) -> None:
        for step, seconds in batch.timings.items():
            self.metrics.step.labels(loaded.name, step).observe(seconds)

    async def infer(self, name: str, table: pa.Table, version: int | None = None) -> RequestResult:
        started = time.perf_counter()
        slot = self.slot(name, version)
        observer = self._observers.get(name)
        if observer is None:
            observer = self._observers[name] = self.metrics.observer(name)
        try:
            conformed = slot.current.conform(table)
            result: RequestResult = await slot.get_batcher(observer).submit(conformed)
        except Exception as exc:  # logged as an error row (the error-rate monitor reads them), then answered
            self.deployments.failed(slot.current, table.num_rows, exc, started)
            raise
        self.metrics.rows.labels(name).inc(table.num_rows)
        self.metrics.latency.labels(name).observe(time.perf_counter() - started)
        return result

    def slot(self, name: str, version: int | None = None) -> Slot:
        """The deployment serving `name`; 503 when the pipeline exists but is not deployed, 404 when it does not."""
        try:
            return self.deployments.get(name, version)
        except PipelineNotDeployed:
            try:
                self.deployments.client._pipelines.get_version(name, version)
            except FinalmileError:
                raise PipelineNotDeployed(name, version) from None
            what = f"pipeline '{name}'" + (f" version {version}" if version is not None else "")
            raise NotReadyError(f"{what} exists but is not deployed", {"name": name, "version": version}) from None

    def live(self) -> bool:
        return True

    def ready(self, name: str | None = None, version: int | None = None) -> bool:
        if name is None:
            return True
        slot = self.deployments.slots.get(name)
        return slot is not None and (version is None or slot.current.version == version)

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "finalmile", "version": __version__, "extensions": ["binary_tensor_data"]}

    def model_metadata(self, name: str, version: int | None = None) -> dict[str, Any]:
        """V2 model metadata of a deployed pipeline: its inputs are the first model's, its outputs the last's."""
        from finalmile.serving.codecs.v2 import _NAMES

        loaded = self.slot(name, version).current
        schema = loaded.input_schema

        def tensors(columns: list[Any]) -> list[dict[str, Any]]:
            out = []
            for c in columns:
                datatype = "BYTES" if c.dtype == "string" else _NAMES.get(c.dtype, "FP64")
                out.append({"name": c.name, "datatype": datatype, "shape": [-1, *c.shape]})
            return out

        return {
            "name": name,
            "versions": [str(loaded.version)],
            "platform": "finalmile",
            "inputs": tensors(schema.inputs or []) if schema else [],
            "outputs": tensors(schema.outputs) if schema else [],
        }
