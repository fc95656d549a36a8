"""Metrics recorded without a lock and folded in bulk read exactly as prometheus_client's own would."""

from __future__ import annotations

import threading

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from finalmile.serving import tally
from finalmile.serving.metrics import Metrics
from finalmile.serving.tally import Tally

BUCKETS = (0.001, 0.01, 0.1, 1.0)


def _without_created(text: bytes) -> list[str]:
    """The lines but `_created` (a clock), sums rounded (numpy adds pairwise: the last digits may differ)."""
    lines = [line for line in text.decode().splitlines() if "_created" not in line]
    return [f"{line.split()[0]} {float(line.split()[1]):.12g}" if "_sum{" in line else line for line in lines]


def test_the_exposition_is_prometheus_clients_own_for_the_same_values() -> None:
    rng = np.random.default_rng(0)
    values = [*rng.exponential(0.05, 500).tolist(), *BUCKETS, 0.0, 7.5]  # bounds themselves go in their bucket
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    histogram = Tally("x_seconds", "doc", ["pipeline"], ours, BUCKETS)
    counter = Tally("x_rows", "doc", ["pipeline", "status"], ours)
    reference = Histogram("x_seconds", "doc", ["pipeline"], buckets=BUCKETS, registry=theirs)
    reference_counter = Counter("x_rows", "doc", ["pipeline", "status"], registry=theirs)
    for name in ("a", "b"):
        record, count = histogram.recorder(name), counter.recorder(name, "200")
        for v in values:
            record(v)
            reference.labels(name).observe(v)
            count(3)
            reference_counter.labels(name, "200").inc(3)
    assert _without_created(generate_latest(ours)) == _without_created(generate_latest(theirs))
    created = [line.split("{")[0] for line in generate_latest(ours).decode().splitlines() if "_created{" in line]
    assert created == ["x_seconds_created"] * 2 + ["x_rows_created"] * 2


def test_values_recorded_from_several_threads_while_scraped_are_all_counted(monkeypatch) -> None:
    monkeypatch.setattr(tally, "FOLD_AT", 97)  # folds by the recorders themselves too, mid-run
    registry = CollectorRegistry()
    counter = Tally("n", "doc", ["t"], registry)
    record = counter.recorder("x")
    done = threading.Event()

    def scrape() -> None:
        while not done.is_set():
            generate_latest(registry)

    def work() -> None:
        for _ in range(20_000):
            record(1)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    workers = [threading.Thread(target=work) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    done.set()
    scraper.join()
    assert 'n_total{t="x"} 80000.0' in generate_latest(registry).decode()


def test_what_gathers_between_scrapes_is_bounded(monkeypatch) -> None:
    monkeypatch.setattr(tally, "FOLD_AT", 64)
    metrics = Metrics()
    for _ in range(1000):
        metrics.served("p", 1, 0.002)
        metrics.answered("p", "v2", 200)
    assert all(len(q) < 64 for t in (metrics.rows, metrics.latency, metrics.requests) for q in t._pending.values())
    assert metrics.request_counts() == {"p": (1000, 0)}
    text = metrics.exposition().decode()
    assert 'finalmile_request_seconds_bucket{le="0.005",pipeline="p"} 1000.0' in text
    assert 'finalmile_rows_total{pipeline="p"} 1000.0' in text
