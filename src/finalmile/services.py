"""The composition root: one object owns the stores, the artifacts, the log writer, the backend and the data plane.

`Client`, the HTTP app, the CLI and the scheduler are built on a `Services`; the modules below take the narrow
pieces they need from it as arguments and never see a `Client`. The operations that change state across several
stores (upload, version, deploy, undeploy) live here once, so every front end does them the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pyarrow as pa

from finalmile.backends.config import DeploymentConfig
from finalmile.backends.local import LocalBackend
from finalmile.config import FinalmileSettings
from finalmile.logs.query import LogReader
from finalmile.logs.writer import LogWriter
from finalmile.monitoring.context import MonitorContext
from finalmile.monitoring.runs import run_monitor
from finalmile.monitoring.store import MonitorStore
from finalmile.pipelines.executor import Batch
from finalmile.pipelines.loaded import LoadedPipeline, RequestResult, load_pipeline
from finalmile.pipelines.spec import pin_spec
from finalmile.pipelines.store import PipelineStore, PipelineVersionRecord
from finalmile.registry.artifacts import ArtifactStore
from finalmile.registry.loader import RuntimeLoader
from finalmile.registry.store import MetadataStore, VersionRecord
from finalmile.registry.upload import current_user, upload_model
from finalmile.serving.dataplane import DataPlane
from finalmile.serving.loop import LoopThread
from finalmile.serving.metrics import Metrics

log = logging.getLogger(__name__)


class Services:
    """Everything one process needs to register, deploy, serve, log and monitor, wired once."""

    def __init__(self, settings: FinalmileSettings) -> None:
        settings.home.mkdir(parents=True, exist_ok=True)
        settings.home = settings.home.resolve()  # a later chdir must not move the store
        self.settings = settings
        self.metadata = MetadataStore(settings.resolved_database_url())
        self.artifacts = ArtifactStore(settings.home / "artifacts")
        self.loader = RuntimeLoader(self.artifacts, settings)
        self.pipelines = PipelineStore(self.metadata)
        self.monitors = MonitorStore(self.metadata)
        self.logs = LogWriter(settings.home / "logs")
        self.reader = LogReader(
            settings.home,
            self.metadata,
            self.pipelines,
            self.logs.flush,
            settings.query_timeout_s,
            settings.query_max_rows,
        )
        self.metrics = Metrics()
        self.backend = LocalBackend(self._load, self._wanted, self.metrics.observer)
        self.backend.hooks.append(self.logs)
        self.backend.observers.append(self._observe_steps)
        self.backend.failure_hooks.append(self.logs.failed)
        self.dataplane = DataPlane(self.backend, self.pipelines, self.metrics)
        self.monitoring = MonitorContext(self.reader, self.monitors, self.artifacts, self.loader, self)
        self._loop = LoopThread()

    @classmethod
    def from_settings(
        cls, home: str | Path | None = None, database_url: str | None = None, settings: FinalmileSettings | None = None
    ) -> Services:
        """Settings from the environment (`FINALMILE_*`), with `home` and `database_url` overriding them."""
        overrides: dict[str, Any] = {}
        if home is not None:
            overrides["home"] = Path(home)
        if database_url is not None:
            overrides["database_url"] = database_url
        return cls((settings or FinalmileSettings()).model_copy(update=overrides))

    def close(self) -> None:
        self.backend.close()
        self._loop.close()
        self.logs.close()
        self.metadata.close()

    @property
    def user(self) -> str:
        """Recorded as who created what this process stores."""
        return self.settings.user or current_user()

    # -- models -------------------------------------------------------------------------------------------------

    def upload_model(self, name: str, source: Any, **options: Any) -> VersionRecord:
        return upload_model(self.metadata, self.artifacts, self.settings, name, source, **options)

    def delete_model_version(self, name: str, version: int) -> None:
        """Delete a version and its artifacts (unless another version shares them); refused while pinned."""
        record = self.metadata.delete_version(name, version)
        for digest in (record.artifact_sha256, record.onnx_sha256, record.sample_sha256):
            if digest and not self.metadata.artifact_in_use(digest):
                self.artifacts.delete(digest)

    # -- pipelines and deployments ------------------------------------------------------------------------------

    def create_pipeline_version(self, spec: dict[str, Any]) -> PipelineVersionRecord:
        """Store a definition as its pipeline's next version, every model reference pinned to an exact version;
        a definition equal to the latest version is that version, not a duplicate."""
        parsed, refs = pin_spec(spec, self.metadata.get_by_ref)
        stored = parsed.model_dump(mode="json")
        latest = self.pipelines.latest(parsed.name)
        if latest is not None and latest.spec == stored:
            return latest
        return self.pipelines.create_version(parsed.name, stored, refs, self.user)

    def deploy(
        self, name: str, version: int | None = None, config: DeploymentConfig | None = None
    ) -> PipelineVersionRecord:
        """Load and warm `version` (default: the latest) beside what is serving, record the deployment, swap it in.
        `config=None` keeps the settings of the deployment serving now (the defaults for a first deployment)."""
        record = self.pipelines.get_version(name, version)
        if config is None:
            current = self.pipelines.deployment(name)
            config = DeploymentConfig.model_validate(current.config) if current else DeploymentConfig()
        chosen = config
        self.backend.deploy(
            name,
            record.version,
            chosen,
            lambda: self.pipelines.set_deployment(name, record.version, chosen.model_dump()),
        )
        return record

    def undeploy(self, name: str) -> None:
        self.pipelines.deactivate(name)
        self.backend.undeploy(name)

    def sync(self) -> None:
        """Converge this process's backend on the deployments the store records."""
        self.backend.sync()

    def infer(self, name: str, table: pa.Table, version: int | None = None, log: bool = True) -> RequestResult:
        """Infer from synchronous code through the data plane (batched, measured and logged like HTTP requests)."""
        return self._loop.run(self.dataplane.infer(name, table, version, log))

    def _load(self, name: str, version: int) -> LoadedPipeline:
        return load_pipeline(self.pipelines.get_version(name, version), self.metadata, self.loader)

    def _wanted(self) -> dict[str, tuple[int, DeploymentConfig]]:
        return {d.name: (d.version, DeploymentConfig.model_validate(d.config)) for d in self.pipelines.deployments()}

    def _observe_steps(self, loaded: LoadedPipeline, batch: Batch) -> None:
        for step, seconds in batch.timings.items():
            self.metrics.step.labels(loaded.name, step).observe(seconds)

    # -- monitors -----------------------------------------------------------------------------------------------

    def run_monitors(self, now: Any = None) -> int:
        """Compute every saved, enabled monitor's windows that have ended; returns how many results were stored.
        A monitor that fails is logged and retried at the next poll; it never stops the others."""
        stored = 0
        for saved in self.monitors.all():
            if saved.enabled:
                try:
                    stored += len(run_monitor(self.monitoring, saved, now))
                except Exception:
                    log.exception("monitor %s failed; the others go on", saved.config.name)
        return stored
