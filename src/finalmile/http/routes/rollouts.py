"""`/api/v1/pipelines/{name}/rollouts` and `/api/v1/rollouts`: a candidate brought in step by step."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from finalmile.http.auth import Caller, Guards
from finalmile.http.routes import run


class RolloutRequest(BaseModel):
    """A rollout: the candidate, its traffic steps and their length, the gates, what long holds do."""

    model_config = {"extra": "forbid"}

    candidate: int | str | dict[str, Any]
    steps: list[float] = Field(default=[5, 25, 50, 100], max_length=100)
    step_every: float | str = "10m"
    gates: list[str | dict[str, Any]] | None = Field(default=None, max_length=50)
    min_rows: int = Field(default=500, ge=1, le=2**53)
    key: str | None = Field(default=None, max_length=200)
    hold_alert_after: int = Field(default=3, ge=1, le=10_000)
    on_hold: str = "pause"
    alias: str | None = Field(default="champion", max_length=200)


def router(guards: Guards) -> APIRouter:
    api = APIRouter(tags=["rollouts"])

    @api.post("/api/v1/pipelines/{name}/rollouts", status_code=201)
    async def rollout(name: str, body: RolloutRequest, who: Caller = Depends(guards.write)) -> dict[str, Any]:
        """Start serving the candidate beside the champion at the first step's share of traffic."""
        record = await run(who.services.rollout, name, actor=who.actor, **body.model_dump())
        return vars(record)

    @api.get("/api/v1/rollouts")
    async def rollouts(pipeline: str | None = None, who: Caller = Depends(guards.read)) -> list[dict[str, Any]]:
        return [vars(r) for r in await run(who.services.rollouts.all, pipeline)]

    @api.post("/api/v1/rollouts/run")
    async def run_rollouts(who: Caller = Depends(guards.write)) -> list[dict[str, Any]]:
        """Judge every rollout whose step is due now (the server does this every second)."""
        return [vars(r) for r in await run(who.services.run_rollouts)]

    @api.get("/api/v1/rollouts/{rollout_id}")
    async def rollout_run(rollout_id: int, who: Caller = Depends(guards.read)) -> dict[str, Any]:
        """One rollout with every transition and its evidence."""
        return vars(await run(who.services.rollouts.get, rollout_id))

    @api.post("/api/v1/rollouts/{rollout_id}/{action}")
    async def control_rollout(rollout_id: int, action: str, who: Caller = Depends(guards.write)) -> dict[str, Any]:
        """`pause`, `resume`, `abort`, `promote` or `rollback` (a promotion)."""
        return vars(await run(who.services.control_rollout, rollout_id, action, actor=who.actor))

    return api
