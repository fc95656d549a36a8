"""`Monitor`: the SDK handle of a drift assay or any other monitor — preview, save, run, results, chart.

>>> assay = client.build_assay("amount-drift", "fraud", "in_amount", baseline=X_train, window="1h", interval="1h",
...                            metric="psi", warning=0.1, alert=0.25)
>>> assay.preview(start, end)          # the series over history, nothing stored: tune thresholds here
>>> assay.save()                       # the server computes it every interval; alerts and actions follow
>>> assay.results()                    # a DataFrame: window, rows, score, status, evidence
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from finalmile.errors import InvalidInputError
from finalmile.monitoring.baseline import baseline_values
from finalmile.monitoring.config import MonitorConfig
from finalmile.monitoring.context import MonitorContext
from finalmile.monitoring.kinds import kind_of
from finalmile.monitoring.runs import preview, results_frame, run_monitor, save
from finalmile.monitoring.store import SavedMonitor
from finalmile.monitoring.windows import MonitorResult

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
        if kind_of(self.config).needs_baseline and self._baseline is None:
            self._baseline = baseline_values(self._ctx, self.config)
        return self._baseline

    def preview(self, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
        """Every window ending between `start` + interval and `end` (default now), computed at once, not stored;
        with no `start`, the day before `end`."""
        return results_frame(preview(self._ctx, self.config, start, end, self.baseline()))

    def save(self, start: datetime | None = None) -> Monitor:
        """Store the monitor; its first window ends one interval after `start` (default: now)."""
        self._saved = save(self._ctx, self.config, start)
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

        return pd.DataFrame([vars(a) for a in self._ctx.store.alerts(self.name)])

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
