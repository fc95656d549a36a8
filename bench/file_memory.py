"""Memory of file inference: the driver's peak RSS, local path vs Ray, on a file and on one twice its size.

    .venv/bin/python bench/file_memory.py [--rows 2000000]

The 29-column forest of bench/runtimes.py. Each run is a fresh process (peak RSS is per process), so the figure is
what scoring the file adds to a process that has imported finalmile (and Ray). Bounded memory means the figure
stays put when the file doubles.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table
from sklearn.ensemble import RandomForestClassifier

from finalmile import Client

sys.path.insert(0, str(Path(__file__).parent))
from runtimes import data  # noqa: E402


def score(home: Path, source: Path, backend: str) -> None:
    """In the child: score `source` and print rows, seconds and peak RSS (MiB)."""
    with Client(home=home) as client:
        client.services.sync()
        started = time.perf_counter()
        result = client.pipeline("forest").infer_file(
            source, source.with_name(f"out-{backend}.parquet"), progress=False, backend=backend
        )
        took = time.perf_counter() - started
    print(result.rows, took, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        score(Path(args.child[0]), Path(args.child[1]), args.child[2])
        return
    X, y = data(5_000)
    table = Table("file", "rows in memory", "backend", "seconds", "rows/s", "driver peak RSS")
    with tempfile.TemporaryDirectory() as workdir:
        home = Path(workdir) / "home"
        with Client(home=home) as client:
            forest = RandomForestClassifier(100, max_depth=8, n_jobs=1, random_state=0).fit(X, y)
            client.build_pipeline("forest").add_model_step(client.upload_model("forest", forest, sample=X)).deploy()
        chunk = pa.Table.from_pandas(X.sample(100_000, replace=True, random_state=1), preserve_index=False)
        for size in (args.rows, 2 * args.rows):
            source = Path(workdir) / f"rows-{size}.parquet"
            with pq.ParquetWriter(source, chunk.schema) as writer:
                for _ in range(size // chunk.num_rows):
                    writer.write_table(chunk)
            in_memory = pq.read_metadata(source).num_rows * chunk.nbytes / chunk.num_rows / 2**20
            for backend in ("local", "ray"):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", str(home), str(source), backend],
                    capture_output=True, text=True, check=True,
                ).stdout.split()  # fmt: skip
                rows, seconds, peak = int(out[-3]), float(out[-2]), float(out[-1])
                table.add_row(
                    source.name, f"{in_memory:,.0f} MiB", backend, f"{seconds:.1f}", f"{rows / seconds:,.0f}",
                    f"{peak:,.0f} MiB",
                )  # fmt: skip
    Console().print(table)


if __name__ == "__main__":
    main()
