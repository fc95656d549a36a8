"""Serving throughput on loopback with wrk, side by side with the in-process ONNX Runtime limit.

    apt-get install wrk            # the load generator (Debian package)
    .venv/bin/python bench/serving.py [--duration 10] [--connections 16]

Scenarios (the 29-feature, 100-tree random forest and a logistic regression, as in the issue):
V2 JSON one row per request (29 named FP32 inputs, and one [1, 29] tensor as generic V2 clients send),
V2 JSON 1,000 rows per request, Arrow IPC 1,000 rows per request, logistic regression one row per request.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
from rich.console import Console
from rich.table import Table
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from finalmile.serving.codecs import ARROW_STREAM
from finalmile.serving.codecs import arrow as arrow_codec
from finalmile.timing import calls_per_second

sys.path.insert(0, str(Path(__file__).parent))
from runtimes import data  # noqa: E402

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "{content_type}"
local f = io.open("{body}", "rb")
wrk.body = f:read("*all")
f:close()
"""


def v2_named(frame: pd.DataFrame) -> bytes:
    return orjson.dumps(
        {
            "inputs": [
                {"name": c, "shape": [len(frame)], "datatype": "FP32", "data": frame[c].astype(np.float32).tolist()}
                for c in frame.columns
            ]
        }
    )


def v2_tensor(frame: pd.DataFrame) -> bytes:
    values = frame.to_numpy(np.float32)
    return orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": list(values.shape),
                    "datatype": "FP32",
                    "data": values.reshape(-1).tolist(),
                }
            ]
        }
    )


def wrk(
    url: str,
    body: bytes,
    content_type: str,
    seconds: int,
    connections: int,
    workdir: Path,
    cpus: set[int] | None = None,
) -> dict[str, float]:
    """wrk's throughput, p99 and errors; `cpus` pins it (the server then has the other cores to itself)."""
    body_file = workdir / f"body-{abs(hash(body))}.bin"
    body_file.write_bytes(body)
    script = workdir / "post.lua"
    script.write_text(LUA.format(content_type=content_type, body=body_file))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "rps": rps,
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan"),
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    console = Console()
    X, y = data()
    workdir = Path(tempfile.mkdtemp())
    home = workdir / "home"
    with Client(home=home) as client:
        forest = client.upload_model(
            "forest", RandomForestClassifier(100, max_depth=8, n_jobs=1, random_state=0).fit(X, y), sample=X.head(500)
        )
        logreg = client.upload_model("logreg", LogisticRegression(max_iter=500).fit(X, y), sample=X.head(500))
        client.build_pipeline("forest").add_model_step(forest).deploy(max_batch_size=1000, max_delay_ms=1)
        client.build_pipeline("logreg").add_model_step(logreg).deploy(max_batch_size=1000, max_delay_ms=1)
        runtime = forest.load()
        one = pa.Table.from_pandas(X.head(1).astype(np.float32), preserve_index=False)
        thousand = pa.Table.from_pandas(X.head(1000).astype(np.float32), preserve_index=False)
        in_process_1 = calls_per_second(lambda: runtime.predict(one), 2.0)
        in_process_1000 = calls_per_second(lambda: runtime.predict(thousand), 2.0) * 1000
    port = 18080
    env = {"FINALMILE_HOME": str(home), "PATH": str(Path(sys.executable).parent)}
    server = subprocess.Popen([sys.executable, "-m", "finalmile", "serve", "--port", str(port)], env=env)
    try:
        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/models/logreg/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        base = f"http://127.0.0.1:{port}"
        frame1, frame1000 = X.head(1), X.head(1000)
        scenarios = [
            (
                "forest, V2 JSON, 1 row (29 named inputs)",
                f"{base}/v2/models/forest/infer",
                v2_named(frame1),
                "application/json",
                1,
            ),
            (
                "forest, V2 JSON, 1 row ([1, 29] tensor)",
                f"{base}/v2/models/forest/infer",
                v2_tensor(frame1),
                "application/json",
                1,
            ),
            (
                "forest, V2 JSON, 1,000 rows",
                f"{base}/v2/models/forest/infer",
                v2_tensor(frame1000),
                "application/json",
                1000,
            ),
            (
                "forest, Arrow IPC, 1,000 rows",
                f"{base}/pipelines/forest/infer",
                arrow_codec.encode(pa.Table.from_pandas(frame1000.astype(np.float32), preserve_index=False)),
                ARROW_STREAM,
                1000,
            ),
            (
                "logistic regression, V2 JSON, 1 row",
                f"{base}/v2/models/logreg/infer",
                v2_named(frame1),
                "application/json",
                1,
            ),
        ]
        table = Table(
            "scenario",
            "requests/s",
            "rows/s",
            "p99 ms",
            "errors",
            "vs in-process",
            title=f"wrk -t1 -c{args.connections} -d{args.duration}s on loopback (bench/serving.py)",
        )
        results = {}
        for name, url, body, content_type, rows in scenarios:
            check = httpx.post(url, content=body, headers={"content-type": content_type})
            assert check.status_code == 200, check.text
            r = wrk(url, body, content_type, args.duration, args.connections, workdir)
            limit = in_process_1 if rows == 1 else in_process_1000
            results[name] = r | {"rows_per_s": r["rps"] * rows}
            table.add_row(
                name,
                f"{r['rps']:,.0f}",
                f"{r['rps'] * rows:,.0f}",
                f"{r['p99_ms']:.2f}",
                f"{r['errors']:.0f}",
                f"{r['rps'] * rows / limit:.0%}",
            )
        console.print(table)
        console.print(
            f"in-process runtime limit (forest): {in_process_1:,.0f} rows/s at 1 row, "
            f"{in_process_1000:,.0f} rows/s at 1,000 rows"
        )
        print(json.dumps(results, indent=1))
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
