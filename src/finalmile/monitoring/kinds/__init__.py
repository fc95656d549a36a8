"""Monitor kinds by name: each reads and scores its own data (`base.MonitorKind`)."""

from __future__ import annotations

from finalmile.monitoring.config import MonitorConfig
from finalmile.monitoring.kinds.base import MonitorKind
from finalmile.monitoring.kinds.drift import DriftKind
from finalmile.monitoring.kinds.estimated import EstimatedPerformanceKind
from finalmile.monitoring.kinds.multivariate import MultivariateDriftKind
from finalmile.monitoring.kinds.performance import PerformanceKind
from finalmile.monitoring.kinds.quality import DataQualityKind
from finalmile.monitoring.kinds.rates import (
    CheckRateKind,
    ErrorRateKind,
    LatencyKind,
    TimeToFirstTokenKind,
    TokensPerSecondKind,
)

KINDS: dict[str, MonitorKind] = {
    k.name: k
    for k in (
        DriftKind(),
        CheckRateKind(),
        PerformanceKind(),
        ErrorRateKind(),
        LatencyKind(),
        DataQualityKind(),
        EstimatedPerformanceKind(),
        MultivariateDriftKind(),
        TimeToFirstTokenKind(),
        TokensPerSecondKind(),
    )  # fmt: skip
}


def kind_of(config: MonitorConfig) -> MonitorKind:
    return KINDS[config.kind]


def problems(config: MonitorConfig) -> list[str]:
    """Everything wrong with a configuration beyond its fields' own types: the kind's rules, then the thresholds."""
    kind = kind_of(config)
    found = kind.check(config)
    if not found and config.warning is not None and config.alert is not None:
        worse = kind.higher_is_worse(config)
        if (worse and config.warning > config.alert) or (not worse and config.warning < config.alert):
            direction = "higher" if worse else "lower"
            found.append(
                f"warning/alert: for {config.metric} {direction} is worse, so the warning threshold "
                f"({config.warning:g}) must come before the alert threshold ({config.alert:g})"
            )
    return found
