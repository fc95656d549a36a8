"""Prometheus counters and histograms recorded without a lock on the hot path, folded in bulk.

prometheus_client's own `Counter.inc` and `Histogram.observe` take a lock per value and walk the buckets in Python:
on a one-row request, which records four values, that measured ~10% of a served request's time. Here a value is
appended to a deque (atomic under the GIL, so any thread may record) and the values gathered are folded into the
totals in one numpy call — when the registry is read (`/metrics`, `request_counts`), or once `FOLD_AT` have gathered
under one set of labels — so a scrape sees every value recorded before it. The exposition is prometheus_client's
own (`CounterMetricFamily`, `HistogramMetricFamily`): the same series, names and `_created` samples as its metrics.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString

FOLD_AT = 4096
"""Values gathered under one set of labels before the recorder folds them itself (a bounded memory and pause)."""

Recorder = Callable[[float], None]


class Tally:
    """A counter (`buckets` empty: values are amounts added) or a histogram (values are observations) with labels."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        buckets: Sequence[float] = (),
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = np.array([*buckets, np.inf]) if buckets else None
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, ...], deque[float]] = {}
        self._totals: dict[tuple[str, ...], np.ndarray] = {}
        """Per labels: the count per bucket then the sum (a histogram), or the total alone (a counter)."""
        self._created: dict[tuple[str, ...], float] = {}
        registry.register(self)

    def recorder(self, *labels: str) -> Recorder:
        """What the hot path calls with each value under these labels: an append, and a fold once in `FOLD_AT`."""
        pending, fold = self._queue(labels), self.fold
        append = pending.append

        def record(value: float) -> None:
            append(value)
            if len(pending) >= FOLD_AT:
                fold()

        return record

    def add(self, labels: tuple[str, ...], *values: float) -> None:
        """Values under `labels` where no recorder is kept (once a batch or a Ray call: a batch's queue waits)."""
        pending = self._queue(labels)
        pending.extend(values)
        if len(pending) >= FOLD_AT:
            self.fold()

    def _queue(self, labels: tuple[str, ...]) -> deque[float]:
        pending = self._pending.get(labels)
        if pending is not None:
            return pending
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name}: labels {self.labelnames}, got {labels}")
        with self._lock:
            pending = self._pending.get(labels)
            if pending is None:
                self._created[labels] = time.time()
                self._totals[labels] = np.zeros(len(self.bounds) + 1 if self.bounds is not None else 1)
                pending = self._pending[labels] = deque()
        return pending

    def fold(self) -> None:
        """Add every value gathered so far into the totals (values recorded meanwhile wait for the next fold)."""
        with self._lock:
            for labels, pending in self._pending.items():
                n = len(pending)
                if not n:
                    continue
                values = np.fromiter((pending.popleft() for _ in range(n)), float, n)
                totals = self._totals[labels]
                if self.bounds is None:
                    totals[0] += values.sum()
                else:  # `le` buckets: a value equal to a bound is counted in it, as prometheus_client counts it
                    at = np.minimum(np.searchsorted(self.bounds, values, side="left"), len(self.bounds) - 1)
                    totals[:-1] += np.bincount(at, minlength=len(self.bounds))
                    totals[-1] += values.sum()

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        self.fold()
        family: Any = self._family()
        with self._lock:
            totals = {labels: (t.copy(), self._created[labels]) for labels, t in self._totals.items()}
        for labels, (total, created) in totals.items():
            if self.bounds is None:
                family.add_metric(labels, float(total[0]), created=created)
                continue
            cumulative = np.cumsum(total[:-1])
            les = [floatToGoString(b) for b in self.bounds]
            family.add_metric(labels, list(zip(les, cumulative.tolist(), strict=True)), float(total[-1]))
            family.add_sample(self.name + "_created", dict(zip(self.labelnames, labels, strict=True)), created)
        yield family

    def _family(self) -> Metric:
        if self.bounds is None:
            return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
