"""Management API for monitors: `/api/v1/assays` (drift assays and every other monitor kind) and `/api/v1/alerts`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import BaseModel, Field

from finalmile.http.auth import Caller, Guards
from finalmile.http.routes import json_frame, run
from finalmile.monitoring.build import save_definition
from finalmile.monitoring.runs import preview, results_frame
from finalmile.services import Services


class MonitorRequest(BaseModel):
    """A monitor as `Client.build_assay`/`build_monitor` take it; `baseline_values` stands for a DataFrame."""

    model_config = {"extra": "forbid"}

    name: str
    pipeline: str
    kind: str = "drift"
    column: str | None = None
    metric: str | None = None
    check: str | None = Field(
        default=None, description="data_quality: null_rate, out_of_range, unseen_category, type_change"
    )
    baseline: dict[str, Any] | None = Field(
        default=None, description='{"kind": "log", "start": …, "end": …} or {"kind": "model_sample", "model": "m:1"}'
    )
    baseline_values: list[Any] | None = Field(default=None, description="the baseline column's values (training data)")
    baseline_rows: list[dict[str, Any]] | None = Field(
        default=None,
        description="a baseline of several columns as records: multivariate drift's training data, estimated "
        "performance's validation frame (with its label column)",
    )
    reference: dict[str, Any] | None = Field(
        default=None, description='estimated_performance: a labelled period, {"kind": "log", "start": …, "end": …}'
    )
    columns: list[str] | None = Field(default=None, description="multivariate_drift: the logged columns")
    method: str | None = Field(default=None, description="multivariate_drift: pca or classifier")
    prediction: str | None = None
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


def router(guards: Guards) -> APIRouter:
    api = APIRouter(tags=["monitoring"])

    def describe(services: Services, name: str) -> dict[str, Any]:
        saved = services.monitors.get(name)
        return {
            "config": saved.config.model_dump(mode="json"),
            "enabled": saved.enabled,
            "next_window_end": saved.next_window_end.isoformat(),
        }

    def create(services: Services, body: MonitorRequest) -> dict[str, Any]:
        save_definition(services.monitoring, body.model_dump(exclude={"start"}, exclude_none=True), body.start)
        return describe(services, body.name)

    def preview_frame(services: Services, name: str, start: datetime | None, end: datetime) -> Any:
        return results_frame(preview(services.monitoring, services.monitors.get(name).config, start, end))

    @api.post("/api/v1/assays", status_code=201)
    async def create_assay(body: MonitorRequest, who: Caller = Depends(guards.write)) -> dict[str, Any]:
        return await run(create, who.services, body)

    @api.get("/api/v1/assays")
    async def list_assays(who: Caller = Depends(guards.read)) -> list[dict[str, Any]]:
        return [describe(who.services, m.config.name) for m in await run(who.services.monitors.all)]

    @api.get("/api/v1/assays/{name}")
    async def get_assay(name: str, who: Caller = Depends(guards.read)) -> dict[str, Any]:
        return await run(describe, who.services, name)

    @api.get("/api/v1/assays/{name}/results")
    async def assay_results(name: str, who: Caller = Depends(guards.read)) -> Response:
        return json_frame(results_frame(await run(who.services.monitors.results, name)))

    @api.get("/api/v1/assays/{name}/preview")
    async def assay_preview(
        name: str,
        start: datetime | None = None,
        end: datetime | None = None,
        who: Caller = Depends(guards.read),
    ) -> Response:
        """Windows from `start` (default: a day before `end`) to `end` (default: now), computed, not stored."""
        return json_frame(await run(preview_frame, who.services, name, start, end or datetime.now(UTC)))

    @api.post("/api/v1/assays/run")
    async def run_monitors(who: Caller = Depends(guards.write)) -> dict[str, int]:
        """Compute every saved monitor's windows that have ended now (what the server's scheduler does by itself)."""
        return {"stored": await run(who.services.run_monitors)}

    @api.delete("/api/v1/assays/{name}")
    async def delete_assay(name: str, who: Caller = Depends(guards.write)) -> dict[str, str]:
        await run(who.services.monitors.delete, name)
        return {"name": name, "status": "deleted"}

    @api.get("/api/v1/alerts")
    async def alerts(monitor: str | None = None, who: Caller = Depends(guards.read)) -> list[dict[str, Any]]:
        return await run(who.services.monitors.alerts_with_actions, monitor)

    @api.post("/api/v1/alerts/{alert_id}/acknowledge")
    async def acknowledge_alert(alert_id: int, who: Caller = Depends(guards.write)) -> dict[str, Any]:
        """Say a person has seen the alert (the first acknowledgement stands); it no longer counts as open."""
        return (await run(who.services.acknowledge_alert, alert_id, who.actor)).payload()

    return api
