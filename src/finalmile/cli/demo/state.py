"""What the demo's steps share: the model's name, its features, and the state they hand each other (its own
module, so the steps' modules import it and not each other)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console

from finalmile.client import LocalClient
from finalmile.sdk.models import ModelVersion

MODEL = "fraud"
FEATURES = [f"v{i}" for i in range(1, 29)] + ["amount"]


@dataclass
class DemoState:
    """What the demo's steps hand each other: the client, the console, the versions, the timings."""

    client: LocalClient
    console: Console
    train: pd.DataFrame = field(default_factory=pd.DataFrame)
    test: pd.DataFrame = field(default_factory=pd.DataFrame)
    natives: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, ModelVersion] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    """request id -> the true label of the row served under it (ground truth that "arrives later")."""
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(11))
    """Which rows the later chapters' traffic sends."""
    monitor_start: datetime = field(default_factory=lambda: datetime.now(UTC))
    """When the monitors' first window starts."""
