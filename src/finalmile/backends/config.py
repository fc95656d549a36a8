"""`DeploymentConfig`: how a pipeline version is deployed, whatever backend runs it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from finalmile.errors import BadRequestError

BackendName = Literal["local", "ray"]


class Autoscaling(BaseModel):
    """Ray Serve's replica autoscaling, by ongoing requests per replica (Ray's own policy, these knobs only)."""

    model_config = {"extra": "forbid"}

    min_replicas: int = Field(default=1, ge=0, le=64)
    max_replicas: int = Field(default=4, ge=1, le=64)
    target_ongoing_requests: float = Field(default=2.0, gt=0, le=10_000)
    """Requests in flight per replica that autoscaling steers towards (each carries a batch of the front's)."""
    upscale_delay_s: float = Field(default=30.0, ge=0, le=86_400)
    downscale_delay_s: float = Field(default=600.0, ge=0, le=86_400)
    look_back_period_s: float = Field(default=30.0, gt=10, le=86_400)
    """The window over which the replicas' reported ongoing requests are averaged (Ray's replicas and handles
    report every RAY_SERVE_*_AUTOSCALING_METRIC_PUSH_INTERVAL_S; Ray wants the window longer than its 10 s
    default metrics interval)."""

    @model_validator(mode="after")
    def _ordered(self) -> Autoscaling:
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas must be at least min_replicas")
        return self


class DeploymentConfig(BaseModel):
    """Threads, batching, logging and placement of one deployment; stored with the deployment record."""

    model_config = {"extra": "forbid"}

    workers: int = Field(default=1, ge=1, le=64)
    """Inference threads for this pipeline (ONNX Runtime releases the GIL, so threads run in parallel)."""
    max_batch_size: int = Field(default=64, ge=1, le=1_000_000)
    """Most rows coalesced into one batch."""
    max_delay_ms: float = Field(default=1.0, ge=0, le=60_000)
    """How long a batch may wait for more requests when there is concurrency; 0 turns batching off."""
    logging: bool = True
    """Record every inferred row in the inference log."""
    durability: Literal["fast", "strict"] = "fast"
    """`fast`: journaled off the request path, on disk within a second; `strict`: on disk before the response."""
    retention_days: int | None = Field(default=None, ge=1, le=36_500)
    """Delete this pipeline's log partitions older than this many days (at compaction); keep everything when unset."""
    backend: BackendName | None = None
    """Where it runs: `local` (threads of each server process) or `ray` (Ray Serve replicas); unset: the server's
    default (`finalmile serve --backend`)."""
    replicas: int = Field(default=1, ge=1, le=64)
    """Ray replicas when not autoscaling."""
    autoscaling: Autoscaling | None = None
    """Ray: scale replicas with load instead of a fixed `replicas`."""
    replica_cpus: float = Field(default=0.5, gt=0, le=64)
    """Ray: CPUs reserved per replica (fractional, so several fit on a small node)."""


def deployment_config(data: dict[str, Any] | None = None, **fields: Any) -> DeploymentConfig:
    """A `DeploymentConfig` from a dict (a YAML `deployment:` section) or keywords; a bad value is a 400 that names
    its field (`autoscaling.max_replicas`), never a raw validation error."""
    try:
        return DeploymentConfig.model_validate((data or {}) | fields)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(p) for p in problem["loc"]) or "deployment"
        raise BadRequestError(f"deployment {field}: {problem['msg']}", {"field": field}) from None
