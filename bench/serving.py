"""Serving throughput on loopback with wrk, side by side with the in-process ONNX Runtime limit.

    apt-get install wrk            # the load generator (Debian package)
    .venv/bin/python bench/serving.py [--duration 10] [--connections 16]
    .venv/bin/python bench/serving.py --against OTHER/.venv/bin/python [--rounds 3]

`--against` runs a second server from another checkout's environment (say, the previous commit, installed in a
venv of its own) on the same store, one server at a time, alternating which goes first in each round, and reports
the median of each side and their ratio: a code change measured side by side in one run.

Scenarios (the 29-feature, 100-tree random forest and a logistic regression, as in the issue):
V2 JSON one row per request (29 named FP32 inputs, and one [1, 29] tensor as generic V2 clients send),
V2 JSON 1,000 rows per request, Arrow IPC 1,000 rows per request, logistic regression one row per request.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
from rich.console import Console
from rich.table import Table
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from finalmile.cli.demo.timing import calls_per_second
from finalmile.serving.codecs import ARROW_STREAM
from finalmile.serving.codecs import arrow as arrow_codec

sys.path.insert(0, str(Path(__file__).parent))
from runtimes import anchor_forest, data  # noqa: E402

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "{content_type}"
wrk.headers["Authorization"] = "Bearer {token}"
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


def need(*tools: str) -> None:
    """Exit with how to install them when a load generator is missing."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        packages = {"wrk": "wrk", "h2load": "nghttp2-client"}
        sys.exit(f"{', '.join(missing)} not installed: apt-get install {' '.join(packages[t] for t in missing)}")


def wrk(
    url: str,
    body: bytes,
    content_type: str,
    seconds: int,
    connections: int,
    workdir: Path,
    cpus: set[int] | None = None,
    token: str = "",
) -> dict[str, float]:
    """wrk's throughput, p50, p99 and errors; `cpus` pins it (the server then has the other cores to itself)."""
    body_file = workdir / f"body-{abs(hash(body))}.bin"
    body_file.write_bytes(body)
    script = workdir / "post.lua"
    script.write_text(LUA.format(content_type=content_type, body=body_file, token=token))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}

    def percentile(p: int) -> float:
        found = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        return float(found.group(1)) * scale[found.group(2)] if found else float("nan")

    return {
        "rps": rps,
        "p50_ms": percentile(50),
        "p99_ms": percentile(99),
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--against", help="the python of another environment whose finalmile serves the same store")
    parser.add_argument(
        "--against-no-auth",
        action="store_true",
        help="the other side is this checkout with --no-auth: what checking tokens costs",
    )
    parser.add_argument("--workers", type=int, default=1, help="server processes on this side (--workers)")
    parser.add_argument("--rounds", type=int, default=1, help="server starts per side (alternating order)")
    parser.add_argument("--only", default="", help="run only the scenarios whose name contains this text")
    args = parser.parse_args()
    need("wrk")
    console = Console()
    X, y = data()
    workdir = Path(tempfile.mkdtemp())
    home = workdir / "home"
    with Client(home=home) as client:
        forest = client.upload_model("forest", anchor_forest(X, y), sample=X.head(500))
        logreg = client.upload_model("logreg", LogisticRegression(max_iter=500).fit(X, y), sample=X.head(500))
        client.build_pipeline("forest").add_model_step(forest).deploy(max_batch_size=1000, max_delay_ms=1)
        client.build_pipeline("logreg").add_model_step(logreg).deploy(max_batch_size=1000, max_delay_ms=1)
        _, token = client.services.init_access()  # every request carries an owner token (ignored by --no-auth)
        runtime = forest.load()
        one = pa.Table.from_pandas(X.head(1).astype(np.float32), preserve_index=False)
        thousand = pa.Table.from_pandas(X.head(1000).astype(np.float32), preserve_index=False)
        in_process_1 = calls_per_second(lambda: runtime.predict(one), 2.0)
        in_process_1000 = calls_per_second(lambda: runtime.predict(thousand), 2.0) * 1000
    scenarios = [s for s in _scenarios(X) if args.only in s[0]]
    mine = ("--workers", str(args.workers)) if args.workers > 1 else ()
    servers: dict[str, tuple[str, tuple[str, ...]]] = {"this": (sys.executable, mine)}
    if args.against:
        servers["against"] = (args.against, ())
    elif args.against_no_auth:
        servers["against"] = (sys.executable, ("--no-auth",))
    auth = {"authorization": f"Bearer {token}"}
    runs: dict[str, dict[str, list[dict[str, float]]]] = {side: {} for side in servers}
    try:
        for round_ in range(args.rounds):
            order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
            for side in order:
                with _server(*servers[side], home, auth) as base:
                    for name, path, body, content_type, _ in scenarios:
                        url = base + path
                        check = httpx.post(url, content=body, headers={"content-type": content_type} | auth)
                        assert check.status_code == 200, check.text
                        r = wrk(url, body, content_type, args.duration, args.connections, workdir, token=token)
                        runs[side].setdefault(name, []).append(r)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    columns = ["scenario", "requests/s", "rows/s", "p99 ms", "errors", "vs in-process"]
    if "against" in servers:
        columns += ["against req/s", "against p99 ms", "this / against"]
    table = Table(
        *columns,
        title=f"wrk -t1 -c{args.connections} -d{args.duration}s on loopback, median of "
        f"{args.rounds} (bench/serving.py)",
    )
    results = {}
    for name, _, _, _, rows in scenarios:
        mine = _median(runs["this"][name])
        limit = in_process_1 if rows == 1 else in_process_1000
        cells = [
            name,
            f"{mine['rps']:,.0f}",
            f"{mine['rps'] * rows:,.0f}",
            f"{mine['p99_ms']:.2f}",
            f"{mine['errors']:.0f}",
            f"{mine['rps'] * rows / limit:.0%}",
        ]
        results[name] = mine | {"rows_per_s": mine["rps"] * rows}
        if "against" in servers:
            other = _median(runs["against"][name])
            cells += [f"{other['rps']:,.0f}", f"{other['p99_ms']:.2f}", f"{mine['rps'] / other['rps']:.3f}"]
            results[name] |= {"against": other, "each_round": {side: runs[side][name] for side in runs}}
        table.add_row(*cells)
        console.print(table)
        console.print(
            f"in-process runtime limit (forest): {in_process_1:,.0f} rows/s at 1 row, "
            f"{in_process_1000:,.0f} rows/s at 1,000 rows"
        )
    print(json.dumps(results, indent=1))


def _scenarios(X: pd.DataFrame) -> list[tuple[str, str, bytes, str, int]]:
    frame1, frame1000 = X.head(1), X.head(1000)
    arrow_1000 = arrow_codec.encode(pa.Table.from_pandas(frame1000.astype(np.float32), preserve_index=False))
    return [
        (
            "forest, V2 JSON, 1 row (29 named inputs)",
            "/v2/models/forest/infer",
            v2_named(frame1),
            "application/json",
            1,
        ),
        (
            "forest, V2 JSON, 1 row ([1, 29] tensor)",
            "/v2/models/forest/infer",
            v2_tensor(frame1),
            "application/json",
            1,
        ),
        ("forest, V2 JSON, 1,000 rows", "/v2/models/forest/infer", v2_tensor(frame1000), "application/json", 1000),
        ("forest, Arrow IPC, 1,000 rows", "/pipelines/forest/infer", arrow_1000, ARROW_STREAM, 1000),
        ("logistic regression, V2 JSON, 1 row", "/v2/models/logreg/infer", v2_named(frame1), "application/json", 1),
    ]


@contextlib.contextmanager
def _server(
    python: str,
    args: tuple[str, ...],
    home: Path,
    headers: dict[str, str],
    port: int = 18080,
    ready: str = "/v2/models/logreg/ready",
    extra_env: dict[str, str] | None = None,
    cpus: set[int] | None = None,
) -> Iterator[str]:
    """`finalmile serve` from the environment of `python` over `home`, until the block ends (once `ready` is);
    `extra_env` adds settings (`FINALMILE_TRACING`), `cpus` pins the server (the load generator has the others)."""
    # That environment's commands first; the system's after it (Ray starts a replica's worker through bash).
    env = {"FINALMILE_HOME": str(home), "PATH": f"{Path(python).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if python == sys.executable and "PYTHONPATH" in os.environ:  # this side may run a checkout of its own
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    server = subprocess.Popen(
        [python, "-m", "finalmile", "serve", "--port", str(port), *args],
        env=env | (extra_env or {}),
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    try:
        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{port}{ready}", headers=headers).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait()


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.median([r[key] for r in runs])) for key in runs[0]}


if __name__ == "__main__":
    main()
