"""Monitor configuration: serialisable pydantic models, checked when a monitor is built, never when it runs.

One `MonitorConfig` serves every kind: a drift assay on a logged column, the rate of a pipeline check, model
performance against ground truth, the error rate and the p99 latency. The computation lives in `compute.py`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from finalmile.errors import InvalidInputError
from finalmile.monitoring.drift import DRIFT_METRICS, BinMode

Kind = Literal["drift", "check_rate", "performance", "error_rate", "latency_p99"]
Status = Literal["ok", "warning", "alert", "no data"]

PERFORMANCE_METRICS: dict[str, bool] = {
    # name -> higher is worse
    "accuracy": False,
    "precision": False,
    "recall": False,
    "f1": False,
    "roc_auc": False,
    "log_loss": True,
    "rmse": True,
    "mae": True,
    "r2": False,
}


class Binning(BaseModel):
    mode: BinMode = "quantile"
    """`quantile`: edges at the baseline's quantiles; `equal`: equal width over its range; `edges`: as given."""
    bins: int = Field(default=5, ge=1, le=1000)
    edges: list[float] | None = None


class Baseline(BaseModel):
    """What a drift assay compares each window with."""

    kind: Literal["log", "frame", "model_sample"]
    start: datetime | None = None
    """`log`: the pipeline's own log from `start` to `end`."""
    end: datetime | None = None
    artifact: str | None = None
    """`frame`: the baseline values, stored as Parquet in the artifact store (sha256)."""
    model: str | None = None
    """`model_sample`: the sample stored with this model version (`fraud:3`)."""


class WebhookAction(BaseModel):
    kind: Literal["webhook"] = "webhook"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    retries: int = Field(default=3, ge=0, le=10)
    cooldown_s: float = Field(default=3600, ge=0)


class RollbackAction(BaseModel):
    """Deploy the pipeline version before the one serving (same deployment settings)."""

    kind: Literal["rollback"] = "rollback"
    cooldown_s: float = Field(default=3600, ge=0)


class RouteAction(BaseModel):
    """Send all A/B traffic to `variant`: a new pipeline version whose split gives it weight 1, the others 0."""

    kind: Literal["route"] = "route"
    variant: str
    cooldown_s: float = Field(default=3600, ge=0)


class UndeployAction(BaseModel):
    kind: Literal["undeploy"] = "undeploy"
    cooldown_s: float = Field(default=3600, ge=0)


Action = WebhookAction | RollbackAction | RouteAction | UndeployAction


class MonitorConfig(BaseModel):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    pipeline: str
    kind: Kind = "drift"
    column: str | None = None
    """The logged column a drift assay watches (`in_amount`, `out_score`); for `check_rate`, the check's name."""
    metric: str = "psi"
    binning: Binning = Field(default_factory=Binning)
    baseline: Baseline | None = None
    window_s: float = Field(default=86_400, gt=0)
    """How much data each result covers."""
    interval_s: float = Field(default=86_400, gt=0)
    """How often a result is computed (a window ends every interval)."""
    warning: float | None = None
    alert: float | None = None
    variant: str | None = None
    """Only rows served by this A/B variant."""
    group_by: Literal["variant", "pipeline_version"] | None = None
    """One result per variant or per pipeline version in every window."""
    label: str = "label"
    """Performance: the ground-truth column holding the true value."""
    prediction: str | None = None
    """Performance: the logged output compared with it (default `out_label`, `out_score` for roc_auc and
    log_loss, `out_prediction` for rmse, mae and r2)."""
    min_rows: int = Field(default=1, ge=1)
    """Fewer rows than this in a window is `no data`, not a score."""
    actions: list[Action] = Field(default_factory=list)
    action_level: Literal["warning", "alert"] = "alert"
    """The status at which actions fire (alerts are recorded at both levels)."""

    @model_validator(mode="after")
    def _check(self) -> MonitorConfig:
        if self.window_s < self.interval_s:
            raise ValueError(
                f"window_s: a window ({self.window_s:g} s) shorter than its interval ({self.interval_s:g} s) "
                "would leave traffic unmonitored"
            )
        if self.kind == "drift":
            if self.metric not in DRIFT_METRICS:
                raise ValueError(f"metric: unknown drift metric {self.metric!r}; use {', '.join(DRIFT_METRICS)}")
            if not self.column:
                raise ValueError("column: a drift assay needs the logged column it watches")
            if self.baseline is None:
                raise ValueError("baseline: a drift assay needs a baseline")
            if self.binning.mode == "edges" and not self.binning.edges:
                raise ValueError("binning.edges: binning 'edges' needs at least one edge")
        elif self.kind == "performance" and self.metric not in PERFORMANCE_METRICS:
            raise ValueError(
                f"metric: unknown performance metric {self.metric!r}; use {', '.join(PERFORMANCE_METRICS)}"
            )
        elif self.kind == "check_rate" and not self.column:
            raise ValueError("column: a check-rate monitor needs the check's name")
        if self.warning is not None and self.alert is not None:
            worse = self.higher_is_worse
            if (worse and self.warning > self.alert) or (not worse and self.warning < self.alert):
                direction = "higher" if worse else "lower"
                raise ValueError(
                    f"warning/alert: for {self.metric} {direction} is worse, so the warning threshold "
                    f"({self.warning:g}) must come before the alert threshold ({self.alert:g})"
                )
        return self

    @property
    def higher_is_worse(self) -> bool:
        if self.kind == "drift":
            return DRIFT_METRICS[self.metric].higher_is_worse
        if self.kind == "performance":
            return PERFORMANCE_METRICS[self.metric]
        return True

    def status(self, score: float | None, rows: int) -> Status:
        """`alert` at or beyond the alert threshold, `warning` at or beyond the warning threshold, else `ok`."""
        if score is None or rows < self.min_rows:
            return "no data"

        def crossed(threshold: float | None) -> bool:
            if threshold is None:
                return False
            return score >= threshold if self.higher_is_worse else score <= threshold

        if crossed(self.alert):
            return "alert"
        if crossed(self.warning):
            return "warning"
        return "ok"


def parse_duration(value: Any, field: str = "duration") -> float:
    """Seconds from a number, a `timedelta`, or text such as `90s`, `15m`, `1h`, `7d`."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
    if text and text[-1] in units:
        try:
            return float(text[:-1]) * units[text[-1]]
        except ValueError:
            pass
    raise InvalidInputError(f"{field} {value!r}: expected a number and a unit, like 30m, 1h or 7d (or seconds)")
