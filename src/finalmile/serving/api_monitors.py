"""Management API for monitors: `/api/v1/assays` (drift assays and every other monitor kind) and `/api/v1/alerts`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.responses import Response
from pyarrow import ArrowException
from pydantic import BaseModel, Field

from finalmile.errors import InvalidInputError

if TYPE_CHECKING:
    from finalmile.client import Client


class MonitorRequest(BaseModel):
    """A monitor as `Client.build_assay`/`build_monitor` take it; `baseline_values` stands for a DataFrame."""

    name: str
    pipeline: str
    kind: str = "drift"
    column: str | None = None
    metric: str | None = None
    baseline: dict[str, Any] | None = Field(
        default=None, description='{"kind": "log", "start": …, "end": …} or {"kind": "model_sample", "model": "m:1"}'
    )
    baseline_values: list[Any] | None = Field(default=None, description="the baseline column's values (training data)")
    window: str | float = "1d"
    interval: str | float | None = None
    warning: float | None = None
    alert: float | None = None
    variant: str | None = None
    group_by: str | None = None
    label: str | None = None
    binning: dict[str, Any] | None = None
    actions: list[dict[str, Any]] = Field(default_factory=list)
    start: datetime | None = Field(default=None, description="the first window ends one interval after this")


def add_monitor_routes(app: FastAPI, client: Client, run: Callable[..., Awaitable[Any]]) -> None:
    from finalmile.monitoring.monitor import build_monitor, results_frame

    def describe(name: str) -> dict[str, Any]:
        saved = client._monitors.get(name)
        return {
            "config": saved.config.model_dump(mode="json"),
            "enabled": saved.enabled,
            "next_window_end": saved.next_window_end.isoformat(),
        }

    def create(body: MonitorRequest) -> dict[str, Any]:
        try:
            return _create(body)
        except (ValueError, TypeError, OverflowError, ArrowException) as exc:  # values no monitor can be built from
            raise InvalidInputError(f"invalid monitor: {exc}") from None

    def _create(body: MonitorRequest) -> dict[str, Any]:
        fields = body.model_dump(exclude={"baseline_values", "start"}, exclude_none=True)
        if body.baseline_values is not None:
            import numpy as np

            fields["baseline"] = np.asarray(body.baseline_values)
        build_monitor(client, **fields).save(body.start)
        return describe(body.name)

    def frame(results: Any) -> Response:
        return Response(results.to_json(orient="records", date_format="iso"), media_type="application/json")

    @app.post("/api/v1/assays", tags=["monitoring"], status_code=201)
    async def create_assay(body: MonitorRequest) -> dict[str, Any]:
        return await run(create, body)

    @app.get("/api/v1/assays", tags=["monitoring"])
    async def list_assays() -> list[dict[str, Any]]:
        return [describe(m.name) for m in await run(client.monitors)]

    @app.get("/api/v1/assays/{name}", tags=["monitoring"])
    async def get_assay(name: str) -> dict[str, Any]:
        return await run(describe, name)

    @app.get("/api/v1/assays/{name}/results", tags=["monitoring"])
    async def assay_results(name: str) -> Response:
        return frame(results_frame(await run(client._monitors.results, name)))

    @app.get("/api/v1/assays/{name}/preview", tags=["monitoring"])
    async def assay_preview(name: str, start: datetime, end: datetime | None = None) -> Response:
        monitor = await run(client.monitor, name)
        return frame(await run(monitor.preview, start, end or datetime.now(UTC)))

    @app.delete("/api/v1/assays/{name}", tags=["monitoring"])
    async def delete_assay(name: str) -> dict[str, str]:
        await run(client._monitors.delete, name)
        return {"name": name, "status": "deleted"}

    @app.get("/api/v1/alerts", tags=["monitoring"])
    async def alerts(monitor: str | None = None) -> list[dict[str, Any]]:
        raised = await run(client._monitors.alerts, monitor)
        taken = await run(client._monitors.actions, monitor)
        return [
            a.payload()
            | {
                "actions": [
                    {"action": t["action"], "outcome": t["outcome"], "detail": t["detail"], "at": t["at"].isoformat()}
                    for t in taken
                    if t["alert_id"] == a.id
                ]
            }
            for a in raised
        ]
