"""`/api/v1/pipelines` and `/api/v1/deployments`: versions, deploy, undeploy, what serves where."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from finalmile.backends.config import DeploymentConfig
from finalmile.http.auth import Caller, Guards
from finalmile.http.routes import run


class DeployRequest(DeploymentConfig):
    """A deployment's settings and the version to deploy (default: the latest)."""

    version: int | None = None


class RouteRequest(BaseModel):
    """The A/B variant to send all traffic to."""

    model_config = {"extra": "forbid"}

    variant: str = Field(min_length=1, max_length=200)


def router(guards: Guards) -> APIRouter:
    api = APIRouter(tags=["pipelines"])

    @api.get("/api/v1/pipelines")
    async def list_pipelines(who: Caller = Depends(guards.read)) -> list[str]:
        return await run(who.services.pipelines.list_pipelines)

    @api.get("/api/v1/pipelines/{name}")
    async def get_pipeline(name: str, who: Caller = Depends(guards.read)) -> dict[str, Any]:
        versions = await run(who.services.pipelines.list_versions, name)
        deployed = await run(who.services.pipelines.deployment, name)
        return {
            "name": name,
            "versions": [vars(v) for v in versions],
            "deployment": vars(deployed) if deployed else None,
        }

    @api.post("/api/v1/pipelines")
    async def create_pipeline_version(spec: dict[str, Any], who: Caller = Depends(guards.write)) -> dict[str, Any]:
        return vars(await run(who.services.create_pipeline_version, spec, who.actor))

    @api.post("/api/v1/pipelines/{name}/deploy")
    async def deploy(name: str, body: DeployRequest, who: Caller = Depends(guards.write)) -> dict[str, Any]:
        config = DeploymentConfig.model_validate(body.model_dump(exclude={"version"}))
        return vars(await run(who.services.deploy, name, body.version, config, who.actor))

    @api.post("/api/v1/pipelines/{name}/rollback")
    async def rollback(name: str, who: Caller = Depends(guards.write)) -> dict[str, str]:
        """Deploy the version before the serving one."""
        return {"name": name, "status": await run(who.services.rollback, name, who.actor)}

    @api.post("/api/v1/pipelines/{name}/route")
    async def route(name: str, body: RouteRequest, who: Caller = Depends(guards.write)) -> dict[str, str]:
        """Send all of the serving version's A/B traffic to one variant (deployed as a new version)."""
        return {"name": name, "status": await run(who.services.route_all, name, body.variant, who.actor)}

    @api.post("/api/v1/pipelines/{name}/undeploy")
    async def undeploy(name: str, who: Caller = Depends(guards.write)) -> dict[str, str]:
        await run(who.services.undeploy, name, who.actor)
        return {"name": name, "status": "undeployed"}

    @api.get("/api/v1/deployments")
    async def deployments(who: Caller = Depends(guards.read)) -> list[dict[str, Any]]:
        return await run(who.services.deployment_status)

    return api
