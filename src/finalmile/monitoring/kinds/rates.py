"""The monitors of served traffic itself: the rate of a check's flags, the error rate, the p99 latency, and for
generative pipelines the p99 time to first token and the median output tokens per second."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from finalmile.monitoring.config import MonitorConfig
from finalmile.monitoring.kinds.base import MonitorKind, quote, values


class CheckRateKind(MonitorKind):
    """The share of rows a pipeline check flagged (`column` is the check's name)."""

    name = "check_rate"
    column_noun = "check"

    def check(self, config: MonitorConfig) -> list[str]:
        return [] if config.column else ["column: a check-rate monitor needs the check's name"]

    def logged_column(self, config: MonitorConfig) -> str | None:
        return f"check_{config.column}"

    def select(self, config: MonitorConfig) -> tuple[str, list[str]]:
        return f"l.{quote('check_' + (config.column or ''))} AS value", ["l.status = 'ok'"]

    def score(
        self, config: MonitorConfig, table: pa.Table, rows: np.ndarray, baseline: np.ndarray | None
    ) -> tuple[float | None, dict[str, Any]]:
        flags = values(table, "value", rows).astype(bool)
        return float(flags.mean()), {"flagged": int(flags.sum())}


class ErrorRateKind(MonitorKind):
    """The share of requests answered with an error (the log's error rows)."""

    name = "error_rate"

    def select(self, config: MonitorConfig) -> tuple[str, list[str]]:
        return "CAST(l.status <> 'ok' AS INTEGER) AS value", []

    def score(
        self, config: MonitorConfig, table: pa.Table, rows: np.ndarray, baseline: np.ndarray | None
    ) -> tuple[float | None, dict[str, Any]]:
        errors = values(table, "value", rows) > 0
        return float(errors.mean()), {"errors": int(errors.sum())}


class LatencyKind(MonitorKind):
    """The 99th percentile of request latency in milliseconds (one value per request, not per row)."""

    name = "latency_p99"

    def select(self, config: MonitorConfig) -> tuple[str, list[str]]:
        return "l.latency_ms AS value", ["l.row = 0"]

    def score(
        self, config: MonitorConfig, table: pa.Table, rows: np.ndarray, baseline: np.ndarray | None
    ) -> tuple[float | None, dict[str, Any]]:
        return float(np.percentile(values(table, "value", rows).astype(np.float64), 99)), {}


class _CallFigureKind(MonitorKind):
    """A statistic of one figure each generative call logs (`column`), over the calls that have it."""

    column: ClassVar[str]

    def logged_column(self, config: MonitorConfig) -> str | None:
        return self.column

    def select(self, config: MonitorConfig) -> tuple[str, list[str]]:
        return f"l.{self.column} AS value", ["l.status = 'ok'", f"l.{self.column} IS NOT NULL"]

    def score(
        self, config: MonitorConfig, table: pa.Table, rows: np.ndarray, baseline: np.ndarray | None
    ) -> tuple[float | None, dict[str, Any]]:
        return self.statistic(values(table, "value", rows)), {}

    def statistic(self, figures: np.ndarray) -> float:
        raise NotImplementedError


class TimeToFirstTokenKind(_CallFigureKind):
    """A generative pipeline's 99th percentile of time to first token in milliseconds (`out_ttft_ms`, per call)."""

    name = "ttft_p99"
    column = "out_ttft_ms"

    def statistic(self, figures: np.ndarray) -> float:
        return float(np.percentile(figures, 99))


class TokensPerSecondKind(_CallFigureKind):
    """A generative pipeline's median output tokens per second per call (`out_tokens_per_s`): lower is worse."""

    name = "tokens_per_s"
    column = "out_tokens_per_s"

    def higher_is_worse(self, config: MonitorConfig) -> bool:
        return False

    def statistic(self, figures: np.ndarray) -> float:
        return float(np.median(figures))
