"""`Backends`: the one `Backend` the data plane sees, sending each pipeline to the backend its deployment names.

A deployment whose config says `backend: ray` runs on Ray Serve replicas, one that says `local` (or nothing, on a
server started with the local default) on this process's threads. The Ray backend is made on first use, so a store
that never asks for Ray never imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa

from finalmile.backends.base import Backend, Target, Wanted
from finalmile.backends.config import BackendName, DeploymentConfig
from finalmile.backends.local import LocalBackend
from finalmile.errors import BadRequestError, MissingDependencyError, PipelineNotDeployed
from finalmile.pipelines.loaded import RequestResult


class Backends:
    """Routes every call by pipeline to the local backend or the Ray one; itself a `Backend`."""

    name = "router"

    def __init__(
        self,
        wanted: Wanted,
        default: BackendName,
        make_local: Callable[[Wanted], LocalBackend],
        make_ray: Callable[[Wanted], Backend],
        ray_allowed: bool = True,
    ) -> None:
        self.default = default
        self.ray_allowed = ray_allowed or default == "ray"
        self._wanted = wanted
        self._make_ray = make_ray
        self._ray: Backend | None = None
        self._ray_wanted = False
        self.local: LocalBackend = make_local(self.wanted_by("local"))
        """This process's backend, serving the deployments that want `local`; Ray's is made when one wants it."""

    def kind(self, config: DeploymentConfig) -> BackendName:
        return config.backend or self.default

    def wanted_by(self, kind: BackendName) -> Wanted:
        """The store's deployments that run on `kind` (one read of the store, which also notes whether any
        deployment wants Ray, so that `sync` never reads the store twice)."""

        def wanted() -> dict[str, tuple[int, DeploymentConfig]]:
            every = self._wanted()
            self._ray_wanted = any(self.kind(config) == "ray" for _, config in every.values())
            return {name: want for name, want in every.items() if self.kind(want[1]) == kind}

        return wanted

    def ray(self) -> Backend:
        if self._ray is None:
            if not self.ray_allowed:
                raise BadRequestError(
                    "backend: ray is not available on this server (start it with --backend ray or --ray-address)",
                    {"field": "backend"},
                )
            self._ray = self._make_ray(self.wanted_by("ray"))
        return self._ray

    def _backends(self) -> list[Backend]:
        return [self.local] if self._ray is None else [self.local, self._ray]

    def _of(self, pipeline: str) -> Backend:
        for backend in self._backends():
            if backend.serves(pipeline):
                return backend
        raise PipelineNotDeployed(pipeline)

    def deploy(
        self, pipeline: str, version: int, config: DeploymentConfig, record: Callable[[], object] | None = None
    ) -> None:
        target = self.ray() if self.kind(config) == "ray" else self.local
        assert target is not None
        target.deploy(pipeline, version, config, record)
        for other in self._backends():  # moved between backends: the old one stops once the new one serves
            if other is not target and pipeline in other.deployed():
                other.undeploy(pipeline)

    def undeploy(self, pipeline: str) -> None:
        for backend in self._backends():
            backend.undeploy(pipeline)

    def sync(self) -> None:
        self.local.sync()
        if self._ray is not None or (self._ray_wanted and self.ray_allowed):
            self.ray().sync()

    def deployed(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for backend in self._backends():
            found |= backend.deployed()
        return found

    def serves(self, pipeline: str) -> bool:
        return any(backend.serves(pipeline) for backend in self._backends())

    def target(self, pipeline: str, version: int | None = None) -> Target:
        return self._of(pipeline).target(pipeline, version)

    async def infer_each(
        self, pipeline: str, table: pa.Table, ids: list[str], log: bool = True, durable: bool = False
    ) -> list[RequestResult]:
        return await self._of(pipeline).infer_each(pipeline, table, ids, log, durable)

    def close(self) -> None:
        for backend in self._backends():
            backend.close()


def ray_backend(
    wanted: Wanted,
    host: Callable[[], Any],
    workspace: str,
    store: str,
    address: str | None,
    observe: Callable[..., None],
    start_timeout_s: float,
) -> Backend:
    """The Ray backend, imported only now: a store that never deploys on Ray needs no Ray installed."""
    try:
        from finalmile.backends.ray import RayBackend
    except ImportError as exc:
        raise MissingDependencyError("ray", "ray") from exc
    return RayBackend(wanted, host, workspace, store, address, observe, start_timeout_s)
