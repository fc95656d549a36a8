"""Prometheus metrics: counters, histograms and gauges (monitors' newest scores, stream lag), never a log line per
request. `deploy/grafana/finalmile.json` charts them and `deploy/prometheus/alerts.yml` alerts on them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The process's Prometheus collectors (requests, rows, latency, batches, steps), served at `/metrics`."""

    def __init__(self, set_aside: Callable[[], list[str]] = list) -> None:
        self.registry = CollectorRegistry()
        corrupt = Gauge(
            "finalmile_log_files_set_aside",
            "Inference-log journals and Parquet parts that failed their check, kept aside under logs/_corrupt",
            registry=self.registry,
        )
        corrupt.set_function(lambda: len(set_aside()))
        self.requests = Counter(
            "finalmile_requests", "Inference requests", ["pipeline", "protocol", "status"], registry=self.registry
        )
        self.rows = Counter("finalmile_rows", "Rows inferred", ["pipeline"], registry=self.registry)
        self.latency = Histogram(
            "finalmile_request_seconds",
            "Request latency, decode to encode",
            ["pipeline"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.compute = Histogram(
            "finalmile_batch_compute_seconds",
            "Time a batch spends running the pipeline",
            ["pipeline"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue = Histogram(
            "finalmile_queue_seconds",
            "Time a request waits before its batch runs",
            ["pipeline"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "finalmile_batch_rows",
            "Rows per executed batch",
            ["pipeline"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096),
            registry=self.registry,
        )
        self.step = Histogram(
            "finalmile_step_seconds",
            "Time a model step spends on a batch",
            ["pipeline", "step"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "finalmile_batch_requests",
            "Requests coalesced per batch",
            ["pipeline"],
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )

        self._served: dict[str, tuple[Counter, Histogram]] = {}
        self._answered: dict[tuple[str, str, int], Any] = {}
        self.replica_requests = Counter(
            "finalmile_replica_requests", "Requests per Ray replica", ["pipeline", "replica"], registry=self.registry
        )
        self.replica_rows = Counter(
            "finalmile_replica_rows", "Rows run per Ray replica", ["pipeline", "replica"], registry=self.registry
        )
        self.replica_seconds = Counter(
            "finalmile_replica_seconds",
            "Seconds a Ray replica spent on the batches sent to it",
            ["pipeline", "replica"],
            registry=self.registry,
        )

        self._variants: dict[tuple[str, str], Any] = {}
        self.variant_rows = Counter(
            "finalmile_variant_rows", "Rows answered per A/B variant ('-': no split)", ["pipeline", "variant"],
            registry=self.registry,
        )  # fmt: skip
        self.monitor_score = Gauge(
            "finalmile_monitor_score", "A monitor's newest window score", ["monitor", "pipeline", "kind", "group"],
            registry=self.registry,
        )  # fmt: skip
        self.monitor_status = Gauge(
            "finalmile_monitor_status", "A monitor's newest status: 0 ok, 1 warning, 2 alert (no data: not set)",
            ["monitor", "pipeline", "kind", "group"], registry=self.registry,
        )  # fmt: skip
        self.stream_lag = Gauge(
            "finalmile_stream_lag", "Messages waiting in a stream's source, as its broker reports", ["stream"],
            registry=self.registry,
        )  # fmt: skip

    def variant(self, pipeline: str, variant: str, rows: int) -> None:
        """Rows answered by one A/B variant (`-`: no split), the label child looked up once per pair."""
        child = self._variants.get((pipeline, variant))
        if child is None:
            child = self._variants[(pipeline, variant)] = self.variant_rows.labels(pipeline, variant)
        child.inc(rows)

    def monitored(self, name: str, pipeline: str, kind: str, results: list[Any]) -> None:
        """A monitor run's newest window per group, as gauges an alert rule can read."""
        newest: dict[str, Any] = {}
        for result in results:
            known = newest.get(result.group)
            if result.score is not None and (known is None or result.window_end >= known.window_end):
                newest[result.group] = result
        for group, result in newest.items():
            self.monitor_score.labels(name, pipeline, kind, group).set(result.score)
            level = _LEVELS.get(result.status)
            if level is not None:
                self.monitor_status.labels(name, pipeline, kind, group).set(level)

    def served(self, pipeline: str, rows: int, seconds: float) -> None:
        """One request answered: its rows and latency, under the pipeline's label children looked up once."""
        children = self._served.get(pipeline)
        if children is None:
            children = self._served[pipeline] = (self.rows.labels(pipeline), self.latency.labels(pipeline))
        children[0].inc(rows)
        children[1].observe(seconds)

    def answered(self, pipeline: str, protocol: str, status: int) -> None:
        """One answer of an inference route, under its label child looked up once per combination."""
        key = (pipeline, protocol, status)
        child = self._answered.get(key)
        if child is None:
            child = self._answered[key] = self.requests.labels(pipeline, protocol, str(status))
        child.inc()

    def replica(self, pipeline: str, replica: str, rows: int, requests: int, seconds: float) -> None:
        """One call a Ray replica answered, as it reported it with the result."""
        self.replica_requests.labels(pipeline, replica).inc(requests)
        self.replica_rows.labels(pipeline, replica).inc(rows)
        self.replica_seconds.labels(pipeline, replica).inc(seconds)

    def request_counts(self) -> dict[str, tuple[int, int]]:
        """Requests and failed requests (status 400 and above) per pipeline since this process started."""
        counts: dict[str, tuple[int, int]] = {}
        for metric in self.requests.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    name, failed = sample.labels["pipeline"], int(sample.labels["status"]) >= 400
                    total, errors = counts.get(name, (0, 0))
                    counts[name] = (total + int(sample.value), errors + int(sample.value) * failed)
        return counts

    def observer(self, pipeline: str) -> Callable[[int, int, float, list[float]], None]:
        compute = self.compute.labels(pipeline)
        queue = self.queue.labels(pipeline)
        rows = self.batch_rows.labels(pipeline)
        requests = self.batch_requests.labels(pipeline)

        def observe(n_rows: int, n_requests: int, seconds: float, waits: list[float]) -> None:
            compute.observe(seconds)
            rows.observe(n_rows)
            requests.observe(n_requests)
            for wait in waits:
                queue.observe(wait)

        return observe

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


_LEVELS = {"ok": 0, "warning": 1, "alert": 2}
