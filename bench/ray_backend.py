"""The Ray backend against the local one, side by side in one run (figures in the issue's note).

    apt-get install wrk
    .venv/bin/python bench/ray_backend.py [--duration 10] [--rounds 1] [--connections 16] [--file-rows 2000000]

One `finalmile serve --backend ray` (it starts a local Ray on this machine) serves the anchor forest (100 trees,
depth 8, 29 features) twice: pipeline `local` on the local backend and `onray` on one Ray Serve replica (deployed
through the management API, as an engineer would). wrk -t1 sends V2 JSON with 1 row and with 1,000 rows per
request to each in turn (`--rounds` alternating runs each, medians shown); both answers are checked first.
Targets: the Ray path adds <= 2 ms p50 and keeps >= 50% of the local req/s at 1 row, and >= 80% of the local
rows/s at 1,000 rows. wrk keeps 16 requests in flight, so p50 is close to 16 / req/s: the added p50 follows from the
ratio and from how fast the machine is that day (at 50%, +1.7 ms where local does 9,400 req/s, +7 ms at 2,200).

Then file inference over a `--file-rows` Parquet file, in this process: `infer_file` on the local path and with
`backend="ray"` (a Ray actor pool, one actor per free CPU); target: Ray >= 70% of the local rows/s, same output.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table
from sklearn.ensemble import RandomForestClassifier

from finalmile import Client

sys.path.insert(0, str(Path(__file__).parent))
from runtimes import FEATURES, data  # noqa: E402
from serving import _server, v2_tensor, wrk  # noqa: E402


def serving(home: Path, token: str, args: argparse.Namespace, workdir: Path, X: pd.DataFrame) -> Table:
    auth = {"authorization": f"Bearer {token}"}
    table = Table("request", "backend", "req/s", "rows/s", "p50 ms", "p99 ms", "errors", "ray / local")
    with _server(sys.executable, ("--backend", "ray"), home, auth, ready="/v2/models/local/ready") as base:
        deployed = httpx.post(
            f"{base}/api/v1/pipelines/onray/deploy",
            json={"backend": "ray", "replicas": 1, "replica_cpus": 1, "max_batch_size": 1000},
            headers=auth,
            timeout=300,
        )
        assert deployed.status_code == 200, deployed.text
        for rows in (1, 1000):
            body = v2_tensor(X.head(rows))
            answers = [
                httpx.post(f"{base}/v2/models/{name}/infer", content=body, headers=auth, timeout=60)
                for name in ("local", "onray")
            ]
            assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
            assert answers[0].json()["outputs"] == answers[1].json()["outputs"]
            runs: dict[str, list[dict[str, float]]] = {"local": [], "onray": []}
            for round_ in range(args.rounds):  # alternating, so a slow spell of this shared machine hits both
                for name in ("local", "onray") if round_ % 2 == 0 else ("onray", "local"):
                    url = f"{base}/v2/models/{name}/infer"
                    runs[name].append(
                        wrk(url, body, "application/json", args.duration, args.connections, workdir, token=token)
                    )
            measured = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
            local, ray = measured["local"], measured["onray"]
            for name, r in measured.items():
                ratio = f"{ray['rps'] / local['rps']:.0%} (+{ray['p50_ms'] - local['p50_ms']:.2f} ms p50)"
                table.add_row(
                    f"{rows:,} row{'s' if rows > 1 else ''}",
                    name,
                    f"{r['rps']:,.0f}",
                    f"{r['rps'] * rows:,.0f}",
                    f"{r['p50_ms']:.2f}",
                    f"{r['p99_ms']:.2f}",
                    f"{r['errors']:.0f}",
                    ratio if name == "onray" else "",
                )
    return table


def file_inference(home: Path, rows: int, workdir: Path) -> Table:
    source = workdir / "rows.parquet"
    rng = np.random.default_rng(5)
    schema = pa.schema([(c, pa.float64()) for c in FEATURES])
    with pq.ParquetWriter(source, schema) as writer:
        for start in range(0, rows, 200_000):
            n = min(200_000, rows - start)
            writer.write_table(pa.table(dict(zip(FEATURES, rng.standard_normal((n, 29)).T, strict=True))))
    table = Table("file inference", "rows", "seconds", "rows/s", "ray / local")
    with Client(home=home) as client:
        client.services.sync()  # this process serves the stored deployment (as `finalmile infer-file` does)
        pipeline = client.pipeline("local")
        times = {}
        for backend in ("local", "ray"):
            started = time.perf_counter()
            pipeline.infer_file(source, workdir / f"out-{backend}.parquet", batch_size=50_000, backend=backend)
            times[backend] = time.perf_counter() - started
        local, on_ray = (pq.read_table(workdir / f"out-{b}.parquet") for b in ("local", "ray"))
        differs = [c for c in local.column_names if not local.column(c).equals(on_ray.column(c))]
        if differs:
            a, b = local.column(differs[0]).to_numpy(), on_ray.column(differs[0]).to_numpy()
            print(len(a), len(b), np.flatnonzero(a[: min(len(a), len(b))] != b[: min(len(a), len(b))])[:5])
        assert local.schema.equals(on_ray.schema) and not differs, (local.schema, on_ray.schema, differs)
    for backend, seconds in times.items():
        ratio = f"{times['local'] / seconds:.0%}" if backend == "ray" else ""
        table.add_row(backend, f"{rows:,}", f"{seconds:.1f}", f"{rows / seconds:,.0f}", ratio)
    return table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1, help="alternating wrk runs per backend; medians shown")
    parser.add_argument("--file-rows", type=int, default=2_000_000)
    parser.add_argument("--files-only", action="store_true", help="only the file inference comparison")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    console = Console()
    X, y = data()
    workdir = Path(tempfile.mkdtemp())
    home = workdir / "home"
    try:
        with Client(home=home) as client:
            model = RandomForestClassifier(100, max_depth=8, n_jobs=1, random_state=0).fit(X, y)
            forest = client.upload_model("forest", model, sample=X.head(500))
            client.build_pipeline("local").add_model_step(forest).deploy(max_batch_size=1000, backend="local")
            client.build_pipeline("onray").add_model_step(forest).create_version()
            _, token = client.services.init_access()
        if not args.files_only:
            console.print(serving(home, token, args, workdir, X))
        console.print(file_inference(home, args.file_rows, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
