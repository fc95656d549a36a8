"""`DeploymentConfig`: how a pipeline version is deployed, whatever backend runs it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class DeploymentConfig(BaseModel):
    """Threads, batching and logging of one deployment; stored with the deployment record."""

    workers: int = Field(default=1, ge=1, le=64)
    """Inference threads for this pipeline (ONNX Runtime releases the GIL, so threads run in parallel)."""
    max_batch_size: int = Field(default=64, ge=1)
    """Most rows coalesced into one batch."""
    max_delay_ms: float = Field(default=1.0, ge=0)
    """How long a batch may wait for more requests when there is concurrency; 0 turns batching off."""
    logging: bool = True
    """Record every inferred row in the inference log."""
    durability: Literal["fast", "strict"] = "fast"
    """`fast`: journaled off the request path, on disk within a second; `strict`: on disk before the response."""
    retention_days: int | None = Field(default=None, ge=1)
    """Delete this pipeline's log partitions older than this many days (at compaction); keep everything when unset."""
