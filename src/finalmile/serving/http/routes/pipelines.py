"""`/api/v1/pipelines` and `/api/v1/deployments`: versions, deploy, undeploy, what serves where."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from finalmile.access.roles import Principal
from finalmile.backends.config import DeploymentConfig
from finalmile.services import Services
from finalmile.serving.dataplane import DataPlane
from finalmile.serving.http.auth import Guards
from finalmile.serving.http.routes import run


class DeployRequest(DeploymentConfig):
    """A deployment's settings and the version to deploy (default: the latest)."""

    version: int | None = None


def router(services: Services, dataplane: DataPlane, guards: Guards) -> APIRouter:
    api = APIRouter(tags=["pipelines"])
    pipelines = services.pipelines

    @api.get("/api/v1/pipelines")
    async def list_pipelines(who: Principal = Depends(guards.read)) -> list[str]:
        return await run(pipelines.list_pipelines)

    @api.get("/api/v1/pipelines/{name}")
    async def get_pipeline(name: str, who: Principal = Depends(guards.read)) -> dict[str, Any]:
        versions = await run(pipelines.list_versions, name)
        deployed = await run(pipelines.deployment, name)
        return {
            "name": name,
            "versions": [vars(v) for v in versions],
            "deployment": vars(deployed) if deployed else None,
        }

    @api.post("/api/v1/pipelines")
    async def create_pipeline_version(spec: dict[str, Any], who: Principal = Depends(guards.write)) -> dict[str, Any]:
        return vars(await run(services.create_pipeline_version, spec, who.actor))

    @api.post("/api/v1/pipelines/{name}/deploy")
    async def deploy(name: str, body: DeployRequest, who: Principal = Depends(guards.write)) -> dict[str, Any]:
        config = DeploymentConfig.model_validate(body.model_dump(exclude={"version"}))
        return vars(await run(services.deploy, name, body.version, config, who.actor))

    @api.post("/api/v1/pipelines/{name}/undeploy")
    async def undeploy(name: str, who: Principal = Depends(guards.write)) -> dict[str, str]:
        await run(services.undeploy, name, who.actor)
        return {"name": name, "status": "undeployed"}

    @api.get("/api/v1/deployments")
    async def deployments(who: Principal = Depends(guards.read)) -> list[dict[str, Any]]:
        return [vars(d) | {"serving": dataplane.ready(d.name, d.version)} for d in await run(pipelines.deployments)]

    return api
