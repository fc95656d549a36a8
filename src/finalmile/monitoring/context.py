"""`MonitorContext`: the narrow set of stores a monitor reads and acts through, handed in by the composition root."""

from __future__ import annotations

from dataclasses import dataclass

from finalmile.logs.query import LogReader
from finalmile.monitoring.actions import Deployer
from finalmile.monitoring.store import MonitorStore
from finalmile.pipelines.store import PipelineStore
from finalmile.registry.artifacts import ArtifactStore
from finalmile.registry.loader import RuntimeLoader
from finalmile.registry.store import MetadataStore


@dataclass
class MonitorContext:
    """What building, previewing and running monitors needs; no `Client`, no server."""

    reader: LogReader
    store: MonitorStore
    artifacts: ArtifactStore
    loader: RuntimeLoader
    deployer: Deployer

    @property
    def pipelines(self) -> PipelineStore:
        return self.reader.pipelines

    @property
    def models(self) -> MetadataStore:
        return self.reader.metadata
