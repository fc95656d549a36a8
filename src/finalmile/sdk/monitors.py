"""`Monitor`: the SDK handle of a drift assay or any other monitor — preview, save, run, results, chart.

>>> assay = client.build_assay("amount-drift", "fraud", "in_amount", baseline=X_train, window="1h", interval="1h",
...                            metric="psi", warning=0.1, alert=0.25)
>>> assay.preview(start, end)          # the series over history, nothing stored: tune thresholds here
>>> assay.save()                       # the server computes it every interval; alerts and actions follow
>>> assay.results()                    # a DataFrame: window, rows, score, status, evidence
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from finalmile.arrow.frames import to_arrow
from finalmile.errors import InvalidInputError
from finalmile.monitoring.baseline import baseline_column, baseline_values, is_frame
from finalmile.monitoring.config import MonitorConfig
from finalmile.monitoring.context import MonitorContext
from finalmile.monitoring.kinds import KINDS, kind_of
from finalmile.monitoring.runs import preview, results_frame, run_monitor, save
from finalmile.monitoring.store import SavedMonitor
from finalmile.monitoring.windows import MonitorResult
from finalmile.sdk.refs import model_ref

if TYPE_CHECKING:
    import pandas as pd


class Monitor:
    """A monitor of one pipeline's live traffic, computed from its inference log."""

    def __init__(
        self,
        ctx: MonitorContext,
        config: MonitorConfig,
        saved: SavedMonitor | None = None,
        baseline: np.ndarray | None = None,
    ) -> None:
        self._ctx = ctx
        self.config = config
        self._saved = saved
        self._baseline = baseline

    def __repr__(self) -> str:
        state = "saved" if self._saved else "not saved"
        return (
            f"Monitor({self.config.name}, {self.config.kind} {self.config.metric} on {self.config.pipeline}, {state})"
        )

    @property
    def name(self) -> str:
        return self.config.name

    def baseline(self) -> np.ndarray | None:
        """A drift assay's baseline values (read once per handle); None for other kinds."""
        if kind_of(self.config).needs_baseline(self.config) and self._baseline is None:
            self._baseline = baseline_values(self._ctx, self.config)
        return self._baseline

    def preview(self, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
        """Every window ending between `start` + interval and `end` (default now), computed at once, not stored;
        with no `start`, the day before `end`."""
        return results_frame(preview(self._ctx, self.config, start, end, self.baseline()))

    def save(self, start: datetime | None = None) -> Monitor:
        """Store the monitor; its first window ends one interval after `start` (default: now)."""
        self._saved = save(self._ctx, self.config, start, self._baseline)
        return self

    def run(self, now: datetime | None = None) -> list[MonitorResult]:
        """Compute and store every window that has ended by `now`, raise alerts, take actions (what the server's
        scheduler does every few seconds)."""
        return run_monitor(self._ctx, self._require_saved(), now)

    def results(self) -> pd.DataFrame:
        self._require_saved()
        return results_frame(self._ctx.store.results(self.name))

    def alerts(self) -> pd.DataFrame:
        import pandas as pd  # here, not at import: every client (and CLI command) imports this module

        return pd.DataFrame(self._ctx.store.alerts_with_actions(self.name))

    def actions(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self._ctx.store.actions(self.name))

    def chart(self, path: str | Path, window: int = -1, results: pd.DataFrame | None = None) -> Path:
        """A PNG of the score over time with the thresholds, and the baseline-vs-window histograms of `window`."""
        from finalmile.monitoring.chart import draw

        frame = self.results() if results is None else results
        return draw(self.config, frame, Path(path), window)

    def _require_saved(self) -> SavedMonitor:
        if self._saved is None:
            raise InvalidInputError(f"monitor '{self.name}' is not saved yet: call save() first")
        self._saved = self._ctx.store.get(self.name)
        return self._saved


def monitor_definition(fields: dict[str, Any]) -> dict[str, Any]:
    """A monitor's fields as the API takes them (`POST /api/v1/assays`): durations as text or seconds, a model
    version as its reference, training data (a frame or an array) as `baseline_values` of the watched column."""
    body = {k: v for k, v in fields.items() if v is not None}
    for key in ("window", "interval"):
        if isinstance(body.get(key), timedelta):
            body[key] = body[key].total_seconds()
    if body.get("reference") is not None:  # estimated performance's name for its baseline
        body["baseline"] = body.pop("reference")
    baseline = body.get("baseline")
    kind = KINDS.get(str(body.get("kind", "drift")))
    if is_frame(baseline) and kind is not None and kind.reference is not None:
        del body["baseline"]
        body["baseline_rows"] = to_arrow(baseline)[0].to_pylist()  # several columns: the frame as records
    elif hasattr(baseline, "ref"):
        body["baseline"] = {"kind": "model_sample", "model": model_ref(baseline)}
    elif isinstance(baseline, str):
        body["baseline"] = {"kind": "model_sample", "model": baseline}
    elif isinstance(baseline, tuple) and len(baseline) == 2:
        start, end = (b.isoformat() if isinstance(b, datetime) else b for b in baseline)
        body["baseline"] = {"kind": "log", "start": start, "end": end}
    elif baseline is not None and not isinstance(baseline, dict):
        body["baseline_values"] = column_values(baseline, body.get("column"))
        del body["baseline"]
    return body


def column_values(baseline: Any, column: str | None) -> list[Any]:
    """The watched column's values from training data, as JSON carries them (`baseline_column`'s values)."""
    return list(baseline_column(baseline, column or "").column("value").to_pylist())


class RemoteMonitor:
    """A monitor on a server: the same reading methods as `Monitor`, each a verb of the remote client."""

    def __init__(self, client: Any, definition: dict[str, Any], saved: bool = False) -> None:
        self._client = client
        self._definition = definition
        self._saved = saved

    def __repr__(self) -> str:
        return f"RemoteMonitor({self.name}, {'saved' if self._saved else 'not saved'})"

    @property
    def name(self) -> str:
        return str(self._definition["name"])

    @property
    def config(self) -> MonitorConfig:
        """The stored configuration (a saved monitor's, as the server checked it)."""
        if not self._saved:
            raise InvalidInputError(f"monitor '{self.name}' is not saved yet: call save() first")
        return MonitorConfig.model_validate(self._definition)

    def save(self, start: datetime | None = None) -> RemoteMonitor:
        saved = self._client.save_monitor(self._definition, start)
        self._definition, self._saved = saved.config.model_dump(mode="json"), True
        return self

    def preview(self, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
        self._require_saved()
        return self._client.preview_monitor(self.name, start, end)

    def results(self) -> pd.DataFrame:
        self._require_saved()
        return self._client.monitor_results(self.name)

    def alerts(self) -> pd.DataFrame:
        return self._client.alerts(self.name)

    def chart(self, path: str | Path, window: int = -1, results: pd.DataFrame | None = None) -> Path:
        from finalmile.monitoring.chart import draw

        frame = self.results() if results is None else results
        return draw(self.config, frame, Path(path), window)

    def _require_saved(self) -> None:
        if not self._saved:
            raise InvalidInputError(f"monitor '{self.name}' is not saved yet: call save() first")
