"""The remaining verbs that change state: connections, streams, alerts, saved queries — each recorded in the
audit trail — and the monitors' scheduled run."""

from __future__ import annotations

import logging
from typing import Any

from finalmile.jobs.connections import ConnectionRecord, ConnectionStore
from finalmile.logs.saved import SavedQuery, SavedQueryStore
from finalmile.monitoring.context import MonitorContext
from finalmile.monitoring.runs import run_monitor
from finalmile.monitoring.store import AlertRecord, MonitorStore
from finalmile.pipelines.store import PipelineStore
from finalmile.services.acting import Acting
from finalmile.serving.metrics import Metrics
from finalmile.streaming.config import StreamConfig, stream_config
from finalmile.streaming.store import StreamRecord, StreamStore

log = logging.getLogger(__name__)


class OperationVerbs(Acting):
    """Mixed into `Services`."""

    pipelines: PipelineStore
    connections: ConnectionStore
    streams: StreamStore
    monitors: MonitorStore
    monitoring: MonitorContext
    queries: SavedQueryStore
    metrics: Metrics

    # -- connections ----------------------------------------------------------------------------------------------

    def create_connection(self, name: str, type: str, url: str, actor: str | None = None) -> ConnectionRecord:
        """Store a connection, its URL encrypted; the audit trail records the masked URL only."""
        record = self.connections.create(name, type, url, self.acting(actor))
        self.changed(actor, "create connection", f"connection {name}", None, record.url)
        return record

    def delete_connection(self, name: str, actor: str | None = None) -> None:
        record = self.connections.delete(name)
        self.changed(actor, "delete connection", f"connection {name}", record.url, None)

    # -- streams ------------------------------------------------------------------------------------------------

    def apply_stream(self, config: StreamConfig | dict[str, Any], actor: str | None = None) -> StreamRecord:
        """Create or replace a stream; every `finalmile serve` process starts (or restarts) it within seconds."""
        stream = stream_config(config)
        self.pipelines.get_version(stream.pipeline)  # a stream of a pipeline that does not exist is a 404
        for endpoint in (stream.source, stream.sink):
            if endpoint.connection is not None:
                self.connections.url(endpoint.connection)  # known, and decryptable with this key
        before, after = self.streams.apply(stream, self.acting(actor))
        old = before.config.model_dump_json() if before else None
        self.changed(actor, "stream", f"stream {stream.name}", old, stream.model_dump_json())
        return after

    def pause_stream(self, name: str, paused: bool = True, actor: str | None = None) -> StreamRecord:
        record = self.streams.set_paused(name, paused)
        self.changed(actor, "pause stream" if paused else "resume stream", f"stream {name}")
        return record

    def delete_stream(self, name: str, actor: str | None = None) -> None:
        record = self.streams.delete(name)
        self.changed(actor, "delete stream", f"stream {name}", record.config.model_dump_json())

    # -- monitors and saved queries -------------------------------------------------------------------------------

    def acknowledge_alert(self, alert_id: int, actor: str | None = None) -> AlertRecord:
        record = self.monitors.acknowledge(alert_id, self.acting(actor))
        self.changed(actor, "acknowledge", f"alert {alert_id}", "open", record.acknowledged_by)
        return record

    def save_query(self, name: str, sql: str, actor: str | None = None) -> SavedQuery:
        saved = self.queries.save(name, sql, self.acting(actor))
        self.changed(actor, "save query", f"query {name}", None, sql)
        return saved

    def delete_query(self, name: str, actor: str | None = None) -> None:
        self.queries.delete(name)
        self.changed(actor, "delete query", f"query {name}", None, None)

    def run_monitors(self, now: Any = None) -> int:
        """Compute every saved, enabled monitor's windows that have ended; returns how many results were stored.
        A monitor that fails is logged and retried at the next poll; it never stops the others."""
        stored = 0
        for saved in self.monitors.all():
            if saved.enabled:
                try:
                    results = run_monitor(self.monitoring, saved, now)
                    config = saved.config
                    self.metrics.monitored(config.name, config.pipeline, config.kind, results)
                    stored += len(results)
                except Exception:
                    log.exception("monitor %s failed; the others go on", saved.config.name)
        return stored
