"""Replay speed and memory: logged traffic of the anchor forest replayed through a candidate forest (ONNX Runtime).

    .venv/bin/python bench/replay.py [--rows 1000000 10000000]

The served pipeline logs 2,000 real requests; its Parquet log part is then copied (fresh request ids) until the
log holds each size, in the log's own layout. Each replay runs in a fresh process (peak RSS is per process):
end-to-end rows/s (read the log, run the candidate, write the per-row file, summarise), the candidate's own rows/s,
and the process's peak RSS — bounded memory means it stays put when the log grows tenfold.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table
from sklearn.ensemble import RandomForestClassifier

from finalmile import Client

sys.path.insert(0, str(Path(__file__).parent))
from runtimes import data  # noqa: E402


def replay(home: Path) -> None:
    """In the child: replay every logged row through forest:2; print rows, seconds, candidate rows/s, peak MiB."""
    with Client(home=home) as client:
        started = time.perf_counter()
        record = client.replay("forest", "forest:2")
        took = time.perf_counter() - started
    print(record.rows, took, record.summary["rows_per_s"], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def served_with_candidate(client: Client, X: Any, y: Any) -> Any:
    """The anchor forest serving as `forest:1` in pipeline `forest`, a second forest of its shape as `forest:2`."""
    served = RandomForestClassifier(100, max_depth=8, n_jobs=1, random_state=0).fit(X, y)
    candidate = RandomForestClassifier(100, max_depth=8, n_jobs=1, random_state=1).fit(X, y)
    client.upload_model("forest", served, sample=X)
    client.upload_model("forest", candidate, sample=X)
    pipeline = client.build_pipeline("forest").add_model_step("forest:1")
    pipeline.deploy()
    return pipeline


def grow(home: Path, rows: int, pipeline: str = "forest") -> None:
    """Copy the logged part (new request ids) until the pipeline's log holds `rows` rows."""
    folder = home / "logs" / f"pipeline={pipeline}"
    for grown in folder.glob("date=*/bench-*.parquet"):
        grown.unlink()
    parts = sorted(folder.glob("date=*/*.parquet"))
    seed = pa.concat_tables([pq.read_table(p) for p in parts])
    have = seed.num_rows
    index = 0
    target = parts[0].parent
    while have < rows:
        n = min(500_000, rows - have)
        chunk = seed.take(np.arange(n) % seed.num_rows)
        ids = pa.array([f"{index:08x}{i // 4:024x}" for i in range(n)])
        chunk = chunk.set_column(chunk.column_names.index("request_id"), "request_id", ids)
        chunk = chunk.set_column(chunk.column_names.index("row"), "row", pa.array(np.arange(n) % 4, pa.int32()))
        pq.write_table(chunk.cast(seed.schema), target / f"bench-{index:05d}.parquet")
        have += n
        index += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        replay(Path(args.child))
        return
    X, y = data(5_000)
    table = Table("logged rows", "seconds", "rows/s end to end", "candidate rows/s", "peak RSS")
    with tempfile.TemporaryDirectory() as workdir:
        home = Path(workdir) / "home"
        with Client(home=home) as client:
            pipeline = served_with_candidate(client, X, y)
            for start in range(0, 2_000, 500):
                pipeline.infer(X.iloc[start : start + 500])
        for rows in args.rows:
            grow(home, rows)
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(home)], capture_output=True, text=True, check=True
            ).stdout.split()
            n, seconds, candidate_rate, peak = int(out[-4]), float(out[-3]), float(out[-2]), float(out[-1])
            table.add_row(
                f"{n:,}", f"{seconds:.1f}", f"{n / seconds:,.0f}", f"{candidate_rate:,.0f}", f"{peak:,.0f} MiB"
            )
    Console().print(table)


if __name__ == "__main__":
    main()
