"""Pipeline and deployment verbs: a new version, deploy, undeploy, roll back, route — each recorded in the audit
trail — and the synchronous inference the SDK uses."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from finalmile.backends.base import InferRequest
from finalmile.backends.config import DeploymentConfig
from finalmile.backends.router import Backends
from finalmile.monitoring.actions import rollback, route_all
from finalmile.pipelines.loaded import RequestResult
from finalmile.pipelines.spec import pin_spec
from finalmile.pipelines.store import PipelineStore, PipelineVersionRecord
from finalmile.registry.store import MetadataStore
from finalmile.services.acting import Acting
from finalmile.serving.dataplane import DataPlane
from finalmile.serving.loop import LoopThread


class PipelineVerbs(Acting):
    """Mixed into `Services`."""

    metadata: MetadataStore
    pipelines: PipelineStore
    backend: Backends
    dataplane: DataPlane
    _loop: LoopThread

    def create_pipeline_version(self, spec: dict[str, Any], actor: str | None = None) -> PipelineVersionRecord:
        """Store a definition as its pipeline's next version, every model reference pinned to an exact version;
        a definition equal to the latest version is that version, not a duplicate."""
        parsed, refs = pin_spec(spec, self.metadata.get_by_ref)
        stored = parsed.model_dump(mode="json")
        latest = self.pipelines.latest(parsed.name)
        if latest is not None and latest.spec == stored:
            return latest
        record = self.pipelines.create_version(parsed.name, stored, refs, self.acting(actor))
        before = latest.version if latest else None
        self.changed(actor, "version", f"pipeline {parsed.name}", before, record.version)
        return record

    def deploy(
        self,
        name: str,
        version: int | None = None,
        config: DeploymentConfig | None = None,
        actor: str | None = None,
        action: str = "deploy",
    ) -> PipelineVersionRecord:
        """Load and warm `version` (default: the latest) beside what is serving, record the deployment, swap it in.
        `config=None` keeps the settings of the deployment serving now (the defaults for a first deployment);
        `actor` and `action` say who did it in the audit trail (a monitor's rollback, say)."""
        record = self.pipelines.get_version(name, version)
        current = self.pipelines.deployment(name)
        if config is None:
            config = DeploymentConfig.model_validate(current.config) if current else DeploymentConfig()
        chosen = config
        record_it = lambda: self.pipelines.set_deployment(name, record.version, chosen.model_dump())  # noqa: E731
        self.backend.deploy(name, record.version, chosen, record_it)
        self.changed(actor, action, f"pipeline {name}", current.version if current else None, record.version)
        return record

    def undeploy(self, name: str, actor: str | None = None) -> None:
        current = self.pipelines.deployment(name)
        self.pipelines.deactivate(name)
        self.backend.undeploy(name)
        self.changed(actor, "undeploy", f"pipeline {name}", current.version if current else None)

    def rollback(self, name: str, actor: str | None = None) -> str:
        """Deploy the version before the serving one; says what it did."""
        return rollback(self, name, self.acting(actor))

    def route_all(self, name: str, variant: str, actor: str | None = None) -> str:
        """Send all of the serving version's A/B traffic to `variant` (as a new version); says what it did."""
        return route_all(self, name, variant, self.acting(actor))

    def deployment_status(self) -> list[dict[str, Any]]:
        """Every recorded deployment: pipeline, version, settings, and whether this process serves it now."""
        return [vars(d) | {"serving": self.dataplane.ready(d.name, d.version)} for d in self.pipelines.deployments()]

    def sync(self) -> None:
        """Converge this process's backend on the deployments the store records."""
        self.backend.sync()

    def infer(self, name: str, table: pa.Table, version: int | None = None, log: bool = True) -> RequestResult:
        """Infer from synchronous code through the data plane (batched, measured and logged like HTTP requests)."""
        return self._loop.run(self.dataplane.infer(InferRequest(name, table, version, log)))
