"""Prometheus metrics: counters and histograms (recorded without a lock, folded in bulk: `tally`) and gauges
(monitors' newest scores, stream lag), never a log line per request. `deploy/grafana/finalmile.json` charts them
and `deploy/prometheus/alerts.yml` alerts on them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from finalmile.serving.tally import Recorder, Tally

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

        def counter(name: str, documentation: str, labels: list[str]) -> Tally:
            return Tally(name, documentation, labels, self.registry)

        def histogram(name: str, documentation: str, labels: list[str], buckets: tuple[float, ...]) -> Tally:
            return Tally(name, documentation, labels, self.registry, buckets)

        self.requests = counter("finalmile_requests", "Inference requests", ["pipeline", "protocol", "status"])
        self.rows = counter("finalmile_rows", "Rows inferred", ["pipeline"])
        self.latency = histogram(
            "finalmile_request_seconds", "Request latency, decode to encode", ["pipeline"], _LATENCY_BUCKETS
        )
        self.compute = histogram(
            "finalmile_batch_compute_seconds", "Time a batch spends running the pipeline", ["pipeline"],
            _LATENCY_BUCKETS,
        )  # fmt: skip
        self.queue = histogram(
            "finalmile_queue_seconds", "Time a request waits before its batch runs", ["pipeline"], _LATENCY_BUCKETS
        )
        self.batch_rows = histogram(
            "finalmile_batch_rows",
            "Rows per executed batch",
            ["pipeline"],
            (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096),
        )
        self.step = histogram(
            "finalmile_step_seconds", "Time a model step spends on a batch", ["pipeline", "step"], _LATENCY_BUCKETS
        )
        self.batch_requests = histogram(
            "finalmile_batch_requests", "Requests coalesced per batch", ["pipeline"], (1, 2, 4, 8, 16, 32, 64)
        )
        self.replica_requests = counter(
            "finalmile_replica_requests", "Requests per Ray replica", ["pipeline", "replica"]
        )
        self.replica_rows = counter("finalmile_replica_rows", "Rows run per Ray replica", ["pipeline", "replica"])
        self.replica_seconds = counter(
            "finalmile_replica_seconds",
            "Seconds a Ray replica spent on the batches sent to it",
            ["pipeline", "replica"],
        )
        self.variant_rows = counter(
            "finalmile_variant_rows", "Rows answered per A/B variant ('-': no split)", ["pipeline", "variant"]
        )
        self._served: dict[str, tuple[Recorder, Recorder]] = {}
        self._answered: dict[tuple[str, str, int], Recorder] = {}
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
        """Rows answered by one A/B variant (`-`: no split), once a batch."""
        self.variant_rows.add((pipeline, variant), rows)

    def steps(self, pipeline: str, timings: dict[str, float]) -> None:
        """The seconds each model step of a batch took."""
        for step, seconds in timings.items():
            self.step.add((pipeline, step), seconds)

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
        """One request answered: its rows and latency, under the pipeline's recorders made once."""
        recorders = self._served.get(pipeline)
        if recorders is None:
            recorders = self._served[pipeline] = (self.rows.recorder(pipeline), self.latency.recorder(pipeline))
        recorders[0](rows)
        recorders[1](seconds)

    def answered(self, pipeline: str, protocol: str, status: int) -> None:
        """One answer of an inference route, under its recorder made once per combination."""
        key = (pipeline, protocol, status)
        record = self._answered.get(key)
        if record is None:
            record = self._answered[key] = self.requests.recorder(pipeline, protocol, str(status))
        record(1)

    def replica(self, pipeline: str, replica: str, rows: int, requests: int, seconds: float) -> None:
        """One call a Ray replica answered, as it reported it with the result."""
        self.replica_requests.add((pipeline, replica), requests)
        self.replica_rows.add((pipeline, replica), rows)
        self.replica_seconds.add((pipeline, replica), seconds)

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
        compute = self.compute.recorder(pipeline)
        rows = self.batch_rows.recorder(pipeline)
        requests = self.batch_requests.recorder(pipeline)
        queue, labels = self.queue, (pipeline,)

        def observe(n_rows: int, n_requests: int, seconds: float, waits: list[float]) -> None:
            compute(seconds)
            rows(n_rows)
            requests(n_requests)
            queue.add(labels, *waits)

        return observe

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


_LEVELS = {"ok": 0, "warning": 1, "alert": 2}
