"""Explanation verbs: a model version's rows, a logged request, and global importance per window, explained."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
from pyarrow import ArrowException

from finalmile.arrow.frames import to_arrow
from finalmile.config import parse_duration
from finalmile.errors import InvalidInputError
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
        try:
            table, base = (_table(t) for t in (rows, background))
        except (ValueError, TypeError, OverflowError, ArrowException) as exc:  # rows no table can be made of
            raise InvalidInputError(f"rows: not a table of values ({exc})", {"field": "rows"}) from None
        assert table is not None
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


def _table(rows: Any) -> pa.Table | None:
    """Rows as a table: a frame, or records as JSON carries them."""
    if rows is None:
        return None
    return pa.Table.from_pylist(rows) if isinstance(rows, list) else to_arrow(rows)[0]
