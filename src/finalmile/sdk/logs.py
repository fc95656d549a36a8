"""The inference log, saved queries and streams as the embedded client speaks them (the remote client speaks the
same verbs over `/api/v1/query`, `/api/v1/pipelines/{name}/logs`, `/api/v1/queries` and `/api/v1/streams`)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from finalmile.arrow.text import json_ready
from finalmile.logs.ground_truth import GroundTruthReceipt, add_ground_truth
from finalmile.logs.journal import set_aside_files
from finalmile.logs.saved import SavedQuery
from finalmile.sdk.refs import pipeline_name

if TYPE_CHECKING:
    from finalmile.services import Services


class LogVerbs:
    """Mixed into the embedded client."""

    services: Services

    def query(self, sql: str) -> Any:
        """Read-only DuckDB SQL over `logs`, `ground_truth`, `models`, `pipelines`; returns a pandas DataFrame."""
        table = self.services.reader.query(sql)
        try:
            return table.to_pandas()
        except pa.ArrowNotImplementedError:  # a union, which pandas has no column for: as the API answers it
            return json_ready(table).to_pandas()

    def pipeline_logs(
        self,
        name: str,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
        version: int | None = None,
        variant: str | None = None,
        columns: list[str] | None = None,
    ) -> pa.Table:
        """A pipeline's log rows, newest first (what `Pipeline.logs` returns, as Arrow)."""
        return self.services.reader.pipeline_logs(name, start, end, limit, version, variant, columns)

    def export_logs(
        self, name: str, path: str | Path, start: datetime | None = None, end: datetime | None = None
    ) -> int:
        """Write a time range of a pipeline's log to Parquet, CSV or JSON lines (by extension), oldest first;
        returns the rows."""
        return self.services.reader.export(name, path, start, end)

    def add_ground_truth(self, name: str, frame: Any, key: str = "request_id") -> GroundTruthReceipt:
        return add_ground_truth(self.services.reader, name, frame, key)

    def log_health(self) -> dict[str, Any]:
        """Inference-log files that failed their check and are kept aside (`logs/_corrupt/`): none is healthy."""
        kept = set_aside_files(self.services.logs.root)
        return {"healthy": not kept, "set_aside": kept}

    def saved_queries(self) -> list[SavedQuery]:
        return self.services.queries.all()

    def save_query(self, name: str, sql: str) -> SavedQuery:
        """Save a query under `name` for the dashboard's SQL page; checked now (one SELECT over the views)."""
        return self.services.save_query(name, sql)

    def delete_query(self, name: str) -> None:
        self.services.delete_query(name)

    # -- streams ------------------------------------------------------------------------------------------------

    def build_stream(
        self, name: str, pipeline: Any, source: dict[str, Any], sink: dict[str, Any], **options: Any
    ) -> dict[str, Any]:
        """Bind a deployed pipeline to a broker source and sink (`{"broker": "nats", "subject": "txns"}`); every
        `finalmile serve` runs it. `options`: batch_size, max_delay_ms, format, max_attempts, dead_letter, group."""
        definition = {"name": name, "pipeline": pipeline_name(pipeline), "source": source, "sink": sink} | options
        return self.services.apply_stream(definition).payload()

    def streams(self) -> list[dict[str, Any]]:
        """Every stream with the status its runner last reported (lag, messages/s, failures, dead letters)."""
        return [r.payload() for r in self.services.streams.all()]

    def stream(self, name: str) -> dict[str, Any]:
        return self.services.streams.get(name).payload()

    def pause_stream(self, name: str) -> dict[str, Any]:
        return self.services.pause_stream(name, True).payload()

    def resume_stream(self, name: str) -> dict[str, Any]:
        return self.services.pause_stream(name, False).payload()

    def delete_stream(self, name: str) -> None:
        self.services.delete_stream(name)
