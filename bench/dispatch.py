"""The server's own Python cost per request, in-process: the ASGI app called directly, no sockets, no load generator.

    .venv/bin/python bench/dispatch.py [--requests 3000] [--concurrency 16]
    .venv/bin/python bench/dispatch.py --against OTHER/.venv/bin/python [--rounds 5]

Deploys the logistic regression and the forest of `bench/serving.py`, then sends V2 JSON one-row requests
(29 named FP32 inputs) through `FinalmileApp` from `concurrency` coroutines, and reports the server process's CPU
microseconds per request (all its threads).
With `--against`, the same measurement runs in another checkout's environment too (say, the previous commit),
alternating which goes first, so a change to the request path is measured side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from runtimes import data  # noqa: E402

_CHILD = r"""
import asyncio, json, sys, time
import numpy as np, orjson, pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.ensemble import RandomForestClassifier
from finalmile import Client

frame = pd.read_parquet(sys.argv[1])
X, y = frame.drop(columns=["y"]), frame["y"].to_numpy()
requests, concurrency, home = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
client = Client(home=home)
if not client.pipelines():
    forest = RandomForestClassifier(100, max_depth=8, n_jobs=1, random_state=0)
    for name, model in (("logreg", LogisticRegression(max_iter=500)), ("forest", forest)):
        mv = client.upload_model(name, model.fit(X, y), sample=X.head(500))
        client.build_pipeline(name).add_model_step(mv).deploy(max_batch_size=1000, max_delay_ms=1)
try:  # this layout, or the one before the redesign
    from finalmile.http.server import create_app
    try:
        app = create_app(client.services, auth=False)  # the request path itself, not the token check
    except TypeError:  # a checkout from before tokens
        app = create_app(client.services)
except ImportError:
    from finalmile.serving.server import create_app
    app = create_app(client)
row = X.head(1)
inputs = [{"name": c, "shape": [1], "datatype": "FP32", "data": row[c].astype(np.float32).tolist()} for c in row]
body = orjson.dumps({"inputs": inputs})
headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]

async def one(path):
    sent = []
    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}
    async def send(message):
        sent.append(message)
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    await app(scope, receive, send)
    assert sent[0]["status"] == 200, sent

async def main():
    out = {}
    async with app.management.router.lifespan_context(app.management):
        for name in ("logreg", "forest"):
            path = f"/v2/models/{name}/infer"
            for _ in range(200):
                await one(path)
            async def worker(n):
                for _ in range(n):
                    await one(path)
            started = time.process_time()  # CPU of every thread of the server: less exposed to the neighbours' load
            await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
            out[name] = (time.process_time() - started) / (requests // concurrency * concurrency) * 1e6
    print(json.dumps(out))

asyncio.run(main())
client.close()
"""


def measure(python: str, rows: Path, home: Path, requests: int, concurrency: int) -> dict[str, float]:
    """Microseconds per request for each pipeline, measured in a fresh process of `python`."""
    env = dict(os.environ)
    if python != sys.executable:
        env.pop("PYTHONPATH", None)  # the other environment imports its own checkout
    out = subprocess.run(
        [python, "-c", _CHILD, str(rows), str(requests), str(concurrency), str(home)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--against", help="the python of another environment to measure side by side")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sides = {"this": sys.executable} | ({"against": args.against} if args.against else {})
    results: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory() as tmp:
        homes = {side: Path(tmp) / side for side in sides}  # a store each, so neither reads the other's log
        rows = Path(tmp) / "rows.parquet"
        X, y = data()
        X.assign(y=y).to_parquet(rows)
        for round_ in range(args.rounds):
            for side in list(sides) if round_ % 2 == 0 else list(reversed(sides)):
                results[side].append(measure(sides[side], rows, homes[side], args.requests, args.concurrency))
    summary: dict[str, Any] = {}
    for name in ("logreg", "forest"):
        row = {side: statistics.median(r[name] for r in runs) for side, runs in results.items()}
        if args.against:
            row["this / against (time)"] = row["this"] / row["against"]
        each = {side: [round(r[name], 1) for r in runs] for side, runs in results.items()}
        summary[name] = row | {"each round": each}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
