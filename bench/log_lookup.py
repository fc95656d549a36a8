"""What a Kafka stream pays to recognise messages an earlier owner may have logged (figures in bench/README.md).

    .venv/bin/python bench/log_lookup.py [--rows 100000 1000000 2000000] [--batch 500]

A synthetic log of one pipeline (ids `topic-0-offset`, in parts of 100,000 rows) is read two ways, as the stream
runner and the Kafka broker read it:

1. `LogReader.logged_ids` for one batch of ids: the runner's lookup of a batch flagged `redelivered`.
2. `LogReader.last_offsets`: the broker's one scan per assignment, which leaves every message above the highest
   logged offset unflagged, so a backlog is not looked up batch by batch.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from finalmile import Client

PART = 100_000


def timed(fn, repeat: int = 5) -> float:  # type: ignore[no-untyped-def]
    """Median milliseconds of `fn()`, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return float(np.median(times)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000, 2_000_000])
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    table = Table(title="a Kafka stream's log lookups")
    for column in ("log rows", f"logged_ids, {args.batch} ids", "last_offsets, one scan"):
        table.add_column(column, justify="right")
    home = Path(tempfile.mkdtemp())
    day = home / "logs" / "pipeline=p" / "date=2026-12-04"
    day.mkdir(parents=True)
    with Client(home=home) as client:
        reader = client.services.reader
        written = 0
        for rows in sorted(args.rows):
            while written < rows:
                ids = [f"orders-0-{written + i}" for i in range(PART)]
                times = pa.array(np.zeros(PART, dtype="datetime64[us]"))
                part = pa.table({"request_id": ids, "status": ["ok"] * PART, "time": times})
                pq.write_table(part, day / f"part-{written // PART}.parquet")
                written += PART
            batch = [f"orders-0-{written + i}" for i in range(args.batch)]  # a backlog's: none logged
            lookup = timed(lambda: reader.logged_ids("p", batch))  # noqa: B023
            scan = timed(lambda: reader.last_offsets("p", "orders"))
            table.add_row(f"{written:,}", f"{lookup:.1f} ms", f"{scan:.1f} ms")
    Console().print(table)


if __name__ == "__main__":
    main()
