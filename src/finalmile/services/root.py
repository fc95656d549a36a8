"""The composition root: one object owns the stores, the artifacts, the log writer, the backend and the data plane.

`Client`, the HTTP app, the CLI and the scheduler are built on a `Services`; the modules below take the narrow
pieces they need from it as arguments and never see a `Client`. This module is the wiring; the operations that
change state across several stores are mixed in by noun (`services/models.py`, `pipelines.py`, `operations.py`,
`access.py`), each acting as its caller and recording the change through `Acting.changed`, so every front end does
them the same way.
"""

from __future__ import annotations

import logging
import threading
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from finalmile.access.audit import AuditTrail
from finalmile.access.store import AccessStore
from finalmile.backends.config import DeploymentConfig
from finalmile.backends.local import LocalBackend
from finalmile.backends.router import Backends, ray_backend
from finalmile.config import FinalmileSettings
from finalmile.jobs.connections import ConnectionStore
from finalmile.jobs.runs import runner_name
from finalmile.jobs.service import Gateway, Jobs
from finalmile.jobs.store import JobStore
from finalmile.logs.journal import set_aside_files
from finalmile.logs.query import LogReader
from finalmile.logs.sandbox import QueryLimits
from finalmile.logs.saved import SavedQueryStore
from finalmile.logs.writer import LogWriter
from finalmile.monitoring.context import MonitorContext
from finalmile.monitoring.store import MonitorStore
from finalmile.pipelines.batch import Batch
from finalmile.pipelines.loaded import LoadedPipeline, load_pipeline
from finalmile.pipelines.store import PipelineStore
from finalmile.registry.artifacts import ArtifactStore
from finalmile.registry.db import workspace_database_url
from finalmile.registry.loader import RuntimeLoader
from finalmile.registry.store import MetadataStore
from finalmile.rollouts.progress import Progress
from finalmile.rollouts.rollout_store import RolloutStore
from finalmile.rollouts.store import ReplayStore
from finalmile.services.access import AccessVerbs
from finalmile.services.explanations import ExplanationVerbs
from finalmile.services.models import ModelVerbs
from finalmile.services.operations import OperationVerbs
from finalmile.services.pipelines import PipelineVerbs
from finalmile.services.replays import ReplayVerbs
from finalmile.services.rollouts import RolloutVerbs
from finalmile.serving.dataplane import DataPlane
from finalmile.serving.loop import LoopThread
from finalmile.serving.metrics import Metrics
from finalmile.streaming.store import StreamStore

log = logging.getLogger(__name__)


class Services(AccessVerbs, ModelVerbs, PipelineVerbs, OperationVerbs, ReplayVerbs, RolloutVerbs, ExplanationVerbs):
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
        self.logs = LogWriter(settings.home / "logs", compact_interval_s=settings.log_compact_s)
        self.audit = AuditTrail(self.metadata)
        self.connections = ConnectionStore(self.metadata, settings.secret_key)
        self.queries = SavedQueryStore(self.metadata)
        self.streams = StreamStore(self.metadata)
        self.replays = ReplayStore(self.metadata)
        self.rollouts = RolloutStore(self.metadata)
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
            {"audit": self.audit.table, "replays": self.replays.table},
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
        self.progress = Progress(self.rollouts, self, self.monitoring, f"{runner_name()}-{id(self):x}", self.monitors)
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
        self.reader.close()
        self.metadata.close()

    def _tell_set_aside(self, kept: str) -> None:
        """A log file set aside as corrupt: an alert that names it, and the audit trail's entry."""
        self.monitors.raise_alert("inference log", "alert", {"set_aside": f"_corrupt/{kept}"})
        self.changed(None, "log corrupt", "inference log", None, f"_corrupt/{kept}")

    @property
    def store_home(self) -> Path:
        """The store's root home, which holds every workspace's (`home/workspaces/NAME`): what uploaded code never
        sees. Services a Ray replica builds for a workspace have no parent, so it is found from the layout."""
        if self._parent is not None:
            return self._parent.settings.home
        return self.settings.home if self.workspace == "default" else self.settings.home.parents[1]

    def _root(self) -> Services:
        return self._parent if self._parent is not None else self

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

    def _load(self, name: str, version: int, config: DeploymentConfig) -> LoadedPipeline:
        record = self.pipelines.get_version(name, version)
        return load_pipeline(record, self.metadata, self.loader, config.max_batch_size)

    def _wanted(self) -> dict[str, tuple[int, DeploymentConfig]]:
        return {d.name: (d.version, DeploymentConfig.model_validate(d.config)) for d in self.pipelines.deployments()}

    def _observe_steps(self, loaded: LoadedPipeline, batch: Batch) -> None:
        self.metrics.steps(loaded.name, batch.timings)
        if batch.route_index is None:
            self.metrics.variant(loaded.name, batch.routes[0][0] or "-", batch.table.num_rows)
        else:
            counts = np.bincount(np.asarray(batch.route_index), minlength=len(batch.routes))
            for (variant, _), rows in zip(batch.routes, counts.tolist(), strict=True):
                if rows:
                    self.metrics.variant(loaded.name, variant or "-", rows)
