"""Monitor configuration: serialisable pydantic models, checked when a monitor is built, never when it runs.

One `MonitorConfig` serves every kind: a drift assay on a logged column, the rate of a pipeline check, model
performance against ground truth, the error rate and the p99 latency. Each kind's rules and computation live in
`kinds/`; `windows.py` cuts the log into windows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from finalmile.config import MAX_DURATION_S
from finalmile.monitoring.drift import BinMode

Kind = Literal[
    "drift", "check_rate", "performance", "error_rate", "latency_p99", "data_quality", "estimated_performance",
    "multivariate_drift", "ttft_p99", "tokens_per_s",
]  # fmt: skip
Status = Literal["ok", "warning", "alert", "no data"]


class Binning(BaseModel):
    """How a drift assay bins numeric values (the baseline decides the edges)."""

    model_config = {"extra": "forbid"}

    mode: BinMode = "quantile"
    """`quantile`: edges at the baseline's quantiles; `equal`: equal width over its range; `edges`: as given."""
    bins: int = Field(default=5, ge=1, le=1000)
    edges: list[float] | None = None


class Baseline(BaseModel):
    """What a drift assay compares each window with."""

    model_config = {"extra": "forbid"}

    kind: Literal["log", "frame", "model_sample"]
    start: datetime | None = None
    """`log`: the pipeline's own log from `start` to `end`."""
    end: datetime | None = None
    artifact: str | None = None
    """`frame`: the baseline values, stored as Parquet in the artifact store (sha256)."""
    model: str | None = None
    """`model_sample`: the sample stored with this model version (`fraud:3`)."""


class WebhookAction(BaseModel):
    """POST the alert as JSON to `url`, retried with back-off."""

    model_config = {"extra": "forbid"}

    kind: Literal["webhook"] = "webhook"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    retries: int = Field(default=3, ge=0, le=10)
    cooldown_s: float = Field(default=3600, ge=0, le=MAX_DURATION_S)


class RollbackAction(BaseModel):
    """Deploy the pipeline version before the one serving (same deployment settings)."""

    model_config = {"extra": "forbid"}

    kind: Literal["rollback"] = "rollback"
    cooldown_s: float = Field(default=3600, ge=0, le=MAX_DURATION_S)


class RouteAction(BaseModel):
    """Send all A/B traffic to `variant`: a new pipeline version whose split gives it weight 1, the others 0."""

    model_config = {"extra": "forbid"}

    kind: Literal["route"] = "route"
    variant: str
    cooldown_s: float = Field(default=3600, ge=0, le=MAX_DURATION_S)


class UndeployAction(BaseModel):
    """Stop serving the pipeline: the last resort for a model that must not answer."""

    model_config = {"extra": "forbid"}

    kind: Literal["undeploy"] = "undeploy"
    cooldown_s: float = Field(default=3600, ge=0, le=MAX_DURATION_S)


Action = WebhookAction | RollbackAction | RouteAction | UndeployAction


class MonitorConfig(BaseModel):
    """A monitor as stored: what it watches, how it windows and scores, when it alerts and what it then does."""

    model_config = {"extra": "forbid"}

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    pipeline: str
    kind: Kind = "drift"
    column: str | None = None
    """The logged column a drift assay watches (`in_amount`, `out_score`); for `check_rate`, the check's name."""
    columns: list[str] | None = Field(default=None, max_length=1000)
    """The logged columns a multivariate drift monitor watches together."""
    metric: str = "psi"
    binning: Binning = Field(default_factory=Binning)
    baseline: Baseline | None = None
    window_s: float = Field(default=86_400, gt=0, le=MAX_DURATION_S)
    """How much data each result covers."""
    interval_s: float = Field(default=86_400, gt=0, le=MAX_DURATION_S)
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
    min_rows: int = Field(default=1, ge=1, le=2**53)
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
        return self


def aware_utc(moment: datetime) -> datetime:
    """A moment as an aware UTC datetime (naive ones are taken as UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
