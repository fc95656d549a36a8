"""The composition root: one object owns the stores, the artifacts, the log writer, the backend and the data plane.

`Client`, the HTTP app, the CLI and the scheduler are built on a `Services`; the modules below take the narrow
pieces they need from it as arguments and never see a `Client`. The operations that change state across several
stores (upload, version, deploy, undeploy) live here once, so every front end does them the same way.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa

from finalmile.access.audit import AuditTrail
from finalmile.access.store import AccessStore
from finalmile.access.verbs import AccessVerbs
from finalmile.backends.config import DeploymentConfig
from finalmile.backends.local import LocalBackend
from finalmile.backends.router import Backends, ray_backend
from finalmile.config import FinalmileSettings
from finalmile.errors import FinalmileError
from finalmile.jobs.connections import ConnectionRecord, ConnectionStore
from finalmile.jobs.service import Gateway, Jobs
from finalmile.jobs.store import JobStore
from finalmile.logs.journal import set_aside_files
from finalmile.logs.query import LogReader
from finalmile.logs.sandbox import QueryLimits
from finalmile.logs.saved import SavedQuery, SavedQueryStore
from finalmile.logs.writer import LogWriter
from finalmile.monitoring.actions import rollback, route_all
from finalmile.monitoring.context import MonitorContext
from finalmile.monitoring.runs import run_monitor
from finalmile.monitoring.store import AlertRecord, MonitorStore
from finalmile.pipelines.batch import Batch
from finalmile.pipelines.loaded import LoadedPipeline, RequestResult, load_pipeline
from finalmile.pipelines.spec import pin_spec
from finalmile.pipelines.store import PipelineStore, PipelineVersionRecord
from finalmile.registry.artifacts import ArtifactStore
from finalmile.registry.db import workspace_database_url
from finalmile.registry.isolation import upload_in_child
from finalmile.registry.loader import RuntimeLoader
from finalmile.registry.store import MetadataStore, VersionRecord
from finalmile.registry.upload import current_user, upload_model
from finalmile.serving.dataplane import DataPlane
from finalmile.serving.loop import LoopThread
from finalmile.serving.metrics import Metrics
from finalmile.streaming.config import StreamConfig, stream_config
from finalmile.streaming.store import StreamRecord, StreamStore

log = logging.getLogger(__name__)


class Services(AccessVerbs):
    """Everything one process needs to register, deploy, serve, log and monitor, wired once."""

    def __init__(self, settings: FinalmileSettings, parent: Services | None = None, workspace: str = "default") -> None:
        settings.home.mkdir(parents=True, exist_ok=True)
        settings.home = settings.home.resolve()  # a later chdir must not move the store
        self.settings = settings
        self.workspace = workspace
        """Whose models, pipelines, logs and monitors these are; `default` is the root (the store at the home)."""
        self._parent = parent
        self._children: dict[str, Services] = {}
        self._children_lock = threading.Lock()
        self.metadata = MetadataStore(settings.resolved_database_url())
        self.artifacts = ArtifactStore(settings.home / "artifacts")
        self.loader = RuntimeLoader(self.artifacts, settings, self.store_home)
        self.pipelines = PipelineStore(self.metadata)
        self.monitors = MonitorStore(self.metadata)
        self.logs = LogWriter(settings.home / "logs")
        self.audit = AuditTrail(self.metadata)
        self.connections = ConnectionStore(self.metadata, settings.secret_key)
        self.queries = SavedQueryStore(self.metadata)
        self.streams = StreamStore(self.metadata)
        self.access: AccessStore = parent.access if parent is not None else AccessStore(self.metadata)
        """Workspaces, members and tokens: always the root's, whichever workspace these services are."""
        self.job_gateway: Gateway | None = None
        """How jobs' children reach the API (the root's; set by the `Client` or the server that holds these)."""
        self.jobs = Jobs(
            JobStore(self.metadata),
            self.audit.record,
            self.user,
            parent.settings if parent is not None else settings,  # environments and what stays unseen: the root's home
            workspace,
            self.connections.readable,
            self.connections.secrets,
            self.job_role,
            lambda: self._root().job_gateway,
        )
        self.reader = LogReader(
            settings.home,
            self.metadata,
            self.pipelines,
            self.logs.flush,
            QueryLimits(
                settings.query_timeout_s, settings.query_max_rows, settings.query_max_bytes, settings.query_memory_mb
            ),
            {"audit": self.audit.table},
            lambda kept: self._tell_set_aside(kept),
        )
        self.metrics = Metrics(partial(set_aside_files, self.logs.root))
        for kept in self.logs.recovery.corrupt:  # told where people look, besides /metrics and the health route
            self._tell_set_aside(kept)
        host = partial(Services, settings, None, workspace)  # what a Ray replica builds in its worker
        self.backend = Backends(
            self._wanted,
            settings.backend,
            lambda wanted: LocalBackend(
                self._load,
                wanted,
                self.metrics.observer,
                hooks=[self.logs],
                observers=[self._observe_steps],
                failure_hooks=[self.logs.failed],
            ),
            lambda wanted: ray_backend(
                wanted,
                host,
                workspace,
                self.metadata.store_id,
                settings.ray_address,
                self.metrics.replica,
                settings.ray_start_timeout_s,
            ),
            settings.ray_on_demand or settings.ray_address is not None,
        )
        self.local = self.backend.local
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
        with self._children_lock:
            children, self._children = list(self._children.values()), {}
        for child in children:
            child.close()
        if self.job_gateway is not None:
            self.job_gateway.close()
        self.backend.close()
        self._loop.close()
        self.logs.close()
        self.metadata.close()

    def _tell_set_aside(self, kept: str) -> None:
        """A log file set aside as corrupt: an alert that names it, and the audit trail's entry."""
        self.monitors.raise_alert("inference log", "alert", {"set_aside": f"_corrupt/{kept}"})
        self.audit.record(self.user, "log corrupt", "inference log", None, f"_corrupt/{kept}")

    @property
    def store_home(self) -> Path:
        """The store's root home, which holds every workspace's (`home/workspaces/NAME`): what uploaded code never
        sees. Services a Ray replica builds for a workspace have no parent, so it is found from the layout."""
        if self._parent is not None:
            return self._parent.settings.home
        return self.settings.home if self.workspace == "default" else self.settings.home.parents[1]

    def _root(self) -> Services:
        return self._parent if self._parent is not None else self

    @property
    def user(self) -> str:
        """Recorded as who created what this process stores."""
        return self.settings.user or current_user()

    # -- workspaces -----------------------------------------------------------------------------------------------

    def for_workspace(self, name: str) -> Services:
        """The services of workspace `name`, made on first use: a metadata store of its own (a PostgreSQL schema
        beside the root's, or a SQLite file), and its own artifacts, logs, backend and monitors under
        `home/workspaces/NAME`. Nothing of another workspace can be read or changed through them, as no query of
        theirs can reach another workspace's tables. `default` is the root."""
        if self._parent is not None:
            return self._parent.for_workspace(name)
        if name == self.workspace:
            return self
        child = self._children.get(name)
        if child is not None:
            return child
        with self._children_lock:
            child = self._children.get(name)
            if child is None:
                self.access.require_workspace(name)
                home = self.settings.home / "workspaces" / name
                url = workspace_database_url(self.settings.resolved_database_url(), name)
                settings = self.settings.model_copy(update={"home": home, "database_url": url})
                child = self._children[name] = Services(settings, parent=self, workspace=name)
            return child

    def every_workspace(self) -> list[Services]:
        """The services of every workspace (the scheduler converges and monitors each)."""
        root = self._parent or self
        return [root.for_workspace(name) for name in root.access.workspaces()]

    # -- models -------------------------------------------------------------------------------------------------

    def upload_model(
        self, name: str, source: Any, isolated: bool = False, actor: str | None = None, **options: Any
    ) -> VersionRecord:
        """Register a new version. `isolated` (the server's uploads) loads and checks it in a child process, so the
        uploaded code never runs in this one."""
        if isolated:
            record = upload_in_child(
                self.metadata, self.artifacts, self.settings, self.store_home, name, source, options
            )
        else:
            record = upload_model(self.metadata, self.artifacts, self.settings, name, source, **options)
        alias = f" (alias {options['alias']})" if options.get("alias") else ""
        self.audit.record(actor or self.user, "upload", f"model {name}", None, f"{name}:{record.version}{alias}")
        return record

    def set_alias(self, name: str, version: int, alias: str, actor: str | None = None) -> VersionRecord:
        """Point `alias` at `version`, moving it if it pointed elsewhere."""
        before = self._alias_target(name, alias)
        record = self.metadata.set_alias(name, version, alias)
        self.audit.record(actor or self.user, "alias", f"model {name}@{alias}", before, f"{name}:{version}")
        return record

    def delete_alias(self, name: str, alias: str, actor: str | None = None) -> None:
        before = self._alias_target(name, alias)
        self.metadata.delete_alias(name, alias)
        self.audit.record(actor or self.user, "delete alias", f"model {name}@{alias}", before, None)

    def _alias_target(self, name: str, alias: str) -> str | None:
        with contextlib.suppress(FinalmileError):
            return f"{name}:{self.metadata.get_by_ref(f'{name}@{alias}').version}"
        return None

    def delete_model_version(self, name: str, version: int, actor: str | None = None) -> None:
        """Delete a version and its artifacts (unless another version shares them); refused while pinned."""
        record = self.metadata.delete_version(name, version)
        for digest in (record.artifact_sha256, record.onnx_sha256, record.sample_sha256):
            if digest and not self.metadata.artifact_in_use(digest):
                self.artifacts.delete(digest)
        self.audit.record(actor or self.user, "delete", f"model {name}", f"{name}:{version}", None)

    # -- pipelines and deployments ------------------------------------------------------------------------------

    def create_pipeline_version(self, spec: dict[str, Any], actor: str | None = None) -> PipelineVersionRecord:
        """Store a definition as its pipeline's next version, every model reference pinned to an exact version;
        a definition equal to the latest version is that version, not a duplicate."""
        parsed, refs = pin_spec(spec, self.metadata.get_by_ref)
        stored = parsed.model_dump(mode="json")
        latest = self.pipelines.latest(parsed.name)
        if latest is not None and latest.spec == stored:
            return latest
        record = self.pipelines.create_version(parsed.name, stored, refs, actor or self.user)
        before = latest.version if latest else None
        self.audit.record(actor or self.user, "version", f"pipeline {parsed.name}", before, record.version)
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
        before = current.version if current else None
        self.audit.record(actor or self.user, action, f"pipeline {name}", before, record.version)
        return record

    def undeploy(self, name: str, actor: str | None = None) -> None:
        current = self.pipelines.deployment(name)
        self.pipelines.deactivate(name)
        self.backend.undeploy(name)
        self.audit.record(actor or self.user, "undeploy", f"pipeline {name}", current.version if current else None)

    def rollback(self, name: str, actor: str | None = None) -> str:
        """Deploy the version before the serving one; says what it did."""
        return rollback(self, name, actor or self.user)

    def route_all(self, name: str, variant: str, actor: str | None = None) -> str:
        """Send all of the serving version's A/B traffic to `variant` (as a new version); says what it did."""
        return route_all(self, name, variant, actor or self.user)

    def deployment_status(self) -> list[dict[str, Any]]:
        """Every recorded deployment: pipeline, version, settings, and whether this process serves it now."""
        return [vars(d) | {"serving": self.dataplane.ready(d.name, d.version)} for d in self.pipelines.deployments()]

    def sync(self) -> None:
        """Converge this process's backend on the deployments the store records."""
        self.backend.sync()

    def infer(self, name: str, table: pa.Table, version: int | None = None, log: bool = True) -> RequestResult:
        """Infer from synchronous code through the data plane (batched, measured and logged like HTTP requests)."""
        return self._loop.run(self.dataplane.infer(name, table, version, log))

    def _load(self, name: str, version: int, config: DeploymentConfig) -> LoadedPipeline:
        record = self.pipelines.get_version(name, version)
        return load_pipeline(record, self.metadata, self.loader, config.max_batch_size)

    def _wanted(self) -> dict[str, tuple[int, DeploymentConfig]]:
        return {d.name: (d.version, DeploymentConfig.model_validate(d.config)) for d in self.pipelines.deployments()}

    def _observe_steps(self, loaded: LoadedPipeline, batch: Batch) -> None:
        for step, seconds in batch.timings.items():
            self.metrics.step.labels(loaded.name, step).observe(seconds)

    # -- connections ----------------------------------------------------------------------------------------------

    def create_connection(self, name: str, type: str, url: str, actor: str | None = None) -> ConnectionRecord:
        """Store a connection, its URL encrypted; the audit trail records the masked URL only."""
        record = self.connections.create(name, type, url, actor or self.user)
        self.audit.record(actor or self.user, "create connection", f"connection {name}", None, record.url)
        return record

    def delete_connection(self, name: str, actor: str | None = None) -> None:
        record = self.connections.delete(name)
        self.audit.record(actor or self.user, "delete connection", f"connection {name}", record.url, None)

    # -- streams ------------------------------------------------------------------------------------------------

    def apply_stream(self, config: StreamConfig | dict[str, Any], actor: str | None = None) -> StreamRecord:
        """Create or replace a stream; every `finalmile serve` process starts (or restarts) it within seconds."""
        stream = stream_config(config)
        self.pipelines.get_version(stream.pipeline)  # a stream of a pipeline that does not exist is a 404
        for endpoint in (stream.source, stream.sink):
            if endpoint.connection is not None:
                self.connections.url(endpoint.connection)  # known, and decryptable with this key
        before, after = self.streams.apply(stream, actor or self.user)
        old = before.config.model_dump_json() if before else None
        self.audit.record(actor or self.user, "stream", f"stream {stream.name}", old, stream.model_dump_json())
        return after

    def pause_stream(self, name: str, paused: bool = True, actor: str | None = None) -> StreamRecord:
        record = self.streams.set_paused(name, paused)
        self.audit.record(actor or self.user, "pause stream" if paused else "resume stream", f"stream {name}")
        return record

    def delete_stream(self, name: str, actor: str | None = None) -> None:
        record = self.streams.delete(name)
        self.audit.record(actor or self.user, "delete stream", f"stream {name}", record.config.model_dump_json())

    # -- monitors and saved queries -------------------------------------------------------------------------------

    def acknowledge_alert(self, alert_id: int, actor: str | None = None) -> AlertRecord:
        record = self.monitors.acknowledge(alert_id, actor or self.user)
        self.audit.record(actor or self.user, "acknowledge", f"alert {alert_id}", "open", record.acknowledged_by)
        return record

    def save_query(self, name: str, sql: str, actor: str | None = None) -> SavedQuery:
        saved = self.queries.save(name, sql, actor or self.user)
        self.audit.record(actor or self.user, "save query", f"query {name}", None, sql)
        return saved

    def delete_query(self, name: str, actor: str | None = None) -> None:
        self.queries.delete(name)
        self.audit.record(actor or self.user, "delete query", f"query {name}", None, None)

    # -- scheduled work -----------------------------------------------------------------------------------------

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
