"""Explanation verbs: a model version's rows, a logged request, and global importance per window, explained."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from finalmile.arrow.frames import to_arrow
from finalmile.config import parse_duration
from finalmile.monitoring.config import aware_utc
from finalmile.monitoring.context import MonitorContext
from finalmile.monitoring.explanations import IMPORTANCE_ROWS, explain_request, explain_rows, importance
from finalmile.registry.store import MetadataStore


class ExplanationVerbs:
    """Mixed into `Services`."""

    metadata: MetadataStore
    monitoring: MonitorContext

    def explain_model(self, ref: str, rows: Any, background: Any = None) -> pa.Table:
        """Each feature's contribution to each row's output, for model version `ref`."""
        record = self.metadata.get_by_ref(ref)
        table = to_arrow(rows)[0]
        base = to_arrow(background)[0] if background is not None else None
        return explain_rows(self.monitoring, record, table, base)

    def explain(self, pipeline: str, request_id: str) -> pa.Table:
        """A logged request's rows explained with the model version that scored them."""
        return explain_request(self.monitoring, pipeline, request_id)

    def importance(self, pipeline: str, start: Any = None, end: Any = None, window: Any = "1h",
                   rows: int = IMPORTANCE_ROWS) -> pa.Table:  # fmt: skip
        """Per window, each feature's mean absolute contribution over a sample of `rows` logged rows."""
        stop = aware_utc(end) if isinstance(end, datetime) else datetime.now(UTC)
        begin = aware_utc(start) if isinstance(start, datetime) else stop - timedelta(days=1)
        return importance(self.monitoring, pipeline, begin, stop, parse_duration(window, "window"), rows)
