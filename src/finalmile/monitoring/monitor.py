"""`Monitor`: the SDK handle of a drift assay or any other monitor — preview, save, run, results, chart.

>>> assay = client.build_assay("amount-drift", "fraud", "in_amount", baseline=X_train, window="1h", interval="1h",
...                            metric="psi", warning=0.1, alert=0.25)
>>> assay.preview(start, end)          # the series over history, nothing stored: tune thresholds here
>>> assay.save()                       # the server computes it every interval; alerts and actions follow
>>> assay.results()                    # a DataFrame: window, rows, score, status, evidence
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from finalmile.errors import InvalidInputError
from finalmile.monitoring.actions import take_actions
from finalmile.monitoring.compute import (
    MAX_WINDOWS,
    MonitorResult,
    baseline_values,
    compute,
    source_column,
    window_ends,
)
from finalmile.monitoring.config import Baseline, MonitorConfig, parse_duration
from finalmile.monitoring.store import MonitorStore, SavedMonitor
from finalmile.pipelines.spec import CheckStepSpec, ModelStepSpec, PipelineSpec, ShadowStepSpec, walk

if TYPE_CHECKING:
    from finalmile.client import Client

_FIXED = {"time", "request_id", "row", "pipeline", "pipeline_version", "variant", "model_versions", "latency_ms"}


class Monitor:
    """A monitor of one pipeline's live traffic, computed from its inference log."""

    def __init__(self, client: Client, config: MonitorConfig, saved: SavedMonitor | None = None) -> None:
        self._client = client
        self.config = config
        self._saved = saved
        self._baseline: np.ndarray | None = None

    def __repr__(self) -> str:
        state = "saved" if self._saved else "not saved"
        return (
            f"Monitor({self.config.name}, {self.config.kind} {self.config.metric} on {self.config.pipeline}, {state})"
        )

    @property
    def name(self) -> str:
        return self.config.name

    def baseline(self) -> np.ndarray | None:
        if self.config.kind == "drift" and self._baseline is None:
            self._client._logs.flush()
            self._baseline = baseline_values(self._client, self.config)
        return self._baseline

    def preview(self, start: datetime, end: datetime | None = None) -> pd.DataFrame:
        """Every window ending between `start` + interval and `end` (default now), computed at once, not stored."""
        self._client._logs.flush()
        ends = window_ends(self.config, _utc(start), _utc(end or datetime.now(UTC)))
        return results_frame(compute(self._client, self.config, ends, self.baseline()))

    def save(self, start: datetime | None = None) -> Monitor:
        """Store the monitor; its first window ends one interval after `start` (default: now)."""
        first = _utc(start or datetime.now(UTC)) + timedelta(seconds=self.config.interval_s)
        self._saved = self._client._monitors.create(self.config, first)
        return self

    def run(self, now: datetime | None = None) -> list[MonitorResult]:
        """Compute and store every window that has ended by `now`, raise alerts, take actions (what the server's
        scheduler calls every few seconds)."""
        saved = self._require_saved()
        return run_monitor(self._client, self._client._monitors, saved, now)

    def results(self) -> pd.DataFrame:
        self._require_saved()
        return results_frame(self._client._monitors.results(self.name))

    def alerts(self) -> pd.DataFrame:
        return pd.DataFrame([vars(a) for a in self._client._monitors.alerts(self.name)])

    def actions(self) -> pd.DataFrame:
        return pd.DataFrame(self._client._monitors.actions(self.name))

    def chart(self, path: str | Path, window: int = -1, results: pd.DataFrame | None = None) -> Path:
        """A PNG of the score over time with the thresholds, and the baseline-vs-window histograms of `window`."""
        from finalmile.monitoring.chart import draw

        frame = self.results() if results is None else results
        return draw(self.config, frame, Path(path), window)

    def _require_saved(self) -> SavedMonitor:
        if self._saved is None:
            raise InvalidInputError(f"monitor '{self.name}' is not saved yet: call save() first")
        self._saved = self._client._monitors.get(self.name)
        return self._saved


def run_monitor(
    client: Client, store: MonitorStore, saved: SavedMonitor, now: datetime | None = None
) -> list[MonitorResult]:
    now = _utc(now or datetime.now(UTC))
    step = timedelta(seconds=saved.config.interval_s)
    ends: list[datetime] = []
    at = saved.next_window_end
    while at <= now and len(ends) < MAX_WINDOWS:
        ends.append(at)
        at += step
    if not ends:
        return []
    client._logs.flush()
    results = compute(client, saved.config, ends)
    levels = {"alert", "warning"}
    alerts = store.record(saved, results, at, levels)
    if alerts:
        take_actions(client, store, saved, alerts)
    return results


def results_frame(results: list[MonitorResult]) -> pd.DataFrame:
    columns = ["window_start", "window_end", "group", "rows", "score", "status", "evidence"]
    return pd.DataFrame([[getattr(r, c) for c in columns] for r in results], columns=columns)


# -- building ---------------------------------------------------------------------------------------------------------


def build_monitor(client: Client, **fields: Any) -> Monitor:
    """Check a monitor's configuration now — thresholds, windows, the column, the baseline — not when it runs."""
    baseline = fields.pop("baseline", None)
    fields = {k: v for k, v in fields.items() if v is not None}
    # The defaults every front end (SDK, CLI, REST) shares: a window ends every window unless told otherwise, and a
    # monitor other than a drift assay is named by its kind (`error_rate`, `latency_p99`, …).
    fields.setdefault("kind", "drift")
    fields.setdefault("metric", "psi" if fields["kind"] == "drift" else fields["kind"])
    if "window" in fields:
        fields.setdefault("interval", fields["window"])
    for key in ("window", "interval"):
        if key in fields:
            fields[f"{key}_s"] = parse_duration(fields.pop(key), key)
    client._pipelines.get_version(fields["pipeline"])  # an unknown pipeline is a 404 now
    if baseline is not None:  # checked after the column: a frame is stored only for a monitor that can exist
        fields["baseline"] = {"kind": "frame"} if _is_frame(baseline) else _baseline_spec(client, baseline)
    try:
        config = MonitorConfig.model_validate(fields)
    except ValidationError as exc:
        problems = [  # checks across fields name their fields in the message; single fields get their name here
            (f"{'.'.join(str(p) for p in e['loc'])}: " if e["loc"] else "") + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        ]
        raise InvalidInputError("; ".join(problems), problems) from None
    _check_column(client, config)
    monitor = Monitor(client, config)
    if config.kind == "drift":
        if _is_frame(baseline):
            assert config.baseline is not None and config.column is not None
            config.baseline.artifact, monitor._baseline = _store_frame(client, baseline, config.column)
        values = monitor.baseline()  # no rows: an error now
        if values is not None and values.dtype == object and config.metric != "chi_squared":
            raise InvalidInputError(
                f"metric: '{config.column}' holds categories, not numbers; use metric='chi_squared'"
            )
    return monitor


def _is_frame(baseline: Any) -> bool:
    return baseline is not None and not isinstance(baseline, (str, tuple, dict, Baseline))


def _baseline_spec(client: Client, baseline: Any) -> dict[str, Any]:
    if isinstance(baseline, str):
        return {"kind": "model_sample", "model": client.model(baseline).ref}  # an unknown model: an error now
    if isinstance(baseline, tuple) and len(baseline) == 2:
        start, end = baseline
        return {"kind": "log", "start": start and _utc(start), "end": end and _utc(end)}
    return baseline.model_dump() if isinstance(baseline, Baseline) else dict(baseline)


def _store_frame(client: Client, baseline: Any, column: str) -> tuple[str, np.ndarray]:
    """The baseline column of a DataFrame, Series or array, stored as Parquet in the artifact store."""
    if isinstance(baseline, (pd.Series, np.ndarray, list)):
        values = pa.table({"value": pa.array(np.asarray(baseline))})
    else:
        from finalmile.frames import to_arrow

        table = to_arrow(baseline)[0]
        values = table.select([source_column(column, table.column_names)]).rename_columns(["value"])
    if values.num_rows == 0:
        raise InvalidInputError("baseline: the baseline frame has no rows")
    buffer = io.BytesIO()
    pq.write_table(values, buffer)
    array = values.column("value").to_numpy(zero_copy_only=False)
    return _put_bytes(client, buffer.getvalue()), (
        array.astype(np.float64) if array.dtype.kind in "iuf" else array.astype(object)
    )


def _put_bytes(client: Client, data: bytes) -> str:
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".parquet") as tmp:
        tmp.write(data)
        tmp.flush()
        digest, _ = client._artifacts.put_file(Path(tmp.name))
    return digest


def _check_column(client: Client, config: MonitorConfig) -> None:
    if config.kind not in ("drift", "check_rate"):
        return
    wanted = config.column if config.kind == "drift" else f"check_{config.column}"
    logged = logged_columns(client, config.pipeline)
    if wanted not in logged:
        what = "check" if config.kind == "check_rate" else "column"
        options = sorted(c for c in logged if c not in _FIXED)
        raise InvalidInputError(
            f"column: pipeline '{config.pipeline}' does not log {what} '{config.column}'; it logs {', '.join(options)}"
        )


def logged_columns(client: Client, pipeline: str) -> set[str]:
    """The columns a pipeline's log has, or will have: its log so far, and what its latest version produces."""
    columns = set(_FIXED) | {"status"}
    spec = PipelineSpec.model_validate(client._pipelines.get_version(pipeline).spec)
    for step in walk(list(spec.steps)):
        if isinstance(step, ModelStepSpec):
            schema = client.model(step.model).schema
            columns |= {f"in_{c.name}" for c in schema.inputs or []}
            columns |= {f"out_{c.name}" for c in schema.outputs}
        elif isinstance(step, CheckStepSpec):
            columns.add(f"check_{step.name}")
        elif isinstance(step, ShadowStepSpec):
            for challenger, steps in step.challengers.items():
                for s in walk(list(steps)):
                    if isinstance(s, ModelStepSpec):
                        columns |= {f"shadow_{challenger}_{c.name}" for c in client.model(s.model).schema.outputs}
    client._logs.flush()
    for part in (client.settings.home / "logs" / f"pipeline={pipeline}").glob("date=*/*.parquet"):
        columns |= set(pq.read_schema(part).names)
    return columns


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
