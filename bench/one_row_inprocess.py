"""Finalmile's own time per one-row request, without HTTP: 16 concurrent clients call the server's ASGI app directly.

    .venv/bin/python bench/one_row_inprocess.py [--requests 16000] [--profile]

The anchor forest is deployed as `bench/bound.py` deploys it (logging on, tokens on); each scenario (29 named V2
inputs, one [1, 29] V2 tensor, one records row) runs in a fresh process that warms up, then times `--requests`
requests, 16 in flight, so they batch as under wrk. No socket, no load generator: the figure moves only with
finalmile's code (and the machine), so it compares two commits more steadily than a served benchmark.
`--profile` prints cProfile's top functions for each scenario (which roughly doubles the times).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import orjson
from rich.console import Console
from rich.table import Table

from finalmile import Client

sys.path.insert(0, str(Path(__file__).parent))
from runtimes import anchor_forest, data  # noqa: E402
from serving import v2_named, v2_tensor  # noqa: E402

SCENARIOS = {
    "V2 JSON, 29 named inputs": ("named", "/v2/models/forest/infer"),
    "V2 JSON, one [1, 29] tensor": ("tensor", "/v2/models/forest/infer"),
    "records JSON, one row": ("records", "/pipelines/forest/infer"),
}

CHILD = r"""
import asyncio, cProfile, json, os, pstats, sys, time
import uvloop
from finalmile.http.server import create_app
body, path, token = open(sys.argv[1], "rb").read(), sys.argv[2], sys.argv[3]
count, profiled = int(sys.argv[4]), sys.argv[5] == "1"
app = create_app(background=False)
headers = [(b"content-type", b"application/json"), (b"authorization", f"Bearer {token}".encode()),
           (b"content-length", str(len(body)).encode())]
scope = {"type": "http", "method": "POST", "path": path, "headers": headers, "query_string": b""}
statuses = []
async def receive():
    return {"type": "http.request", "body": body, "more_body": False}
async def send(message):
    if message["type"] == "http.response.start":
        statuses.append(message["status"])
async def client(n):
    for _ in range(n):
        await app(dict(scope), receive, send)
async def main():
    startup, sent = asyncio.Queue(), []
    await startup.put({"type": "lifespan.startup"})
    async def sink(message):
        sent.append(message)
    life = asyncio.create_task(app.management({"type": "lifespan", "asgi": {"version": "3.0"}}, startup.get, sink))
    while not sent:
        await asyncio.sleep(0.01)
    await asyncio.gather(*(client(200) for _ in range(16)))
    profile = cProfile.Profile() if profiled else None
    wall, cpu = time.perf_counter(), time.process_time()
    if profile:
        profile.enable()
    await asyncio.gather(*(client(count // 16) for _ in range(16)))
    if profile:
        profile.disable()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert set(statuses) == {200}, set(statuses)
    await startup.put({"type": "lifespan.shutdown"})
    await life
    if profile:
        pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    print(json.dumps({"wall_us": wall / count * 1e6, "cpu_us": cpu / count * 1e6}))
uvloop.run(main())
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=16000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    X, y = data()
    row = X.head(1)
    bodies = {"named": v2_named(row), "tensor": v2_tensor(row),
              "records": orjson.dumps(row.astype(np.float32).to_dict("records"))}  # fmt: skip
    table = Table("scenario", "µs a request (wall)", "CPU µs a request",
                  title=f"one row, the ASGI app called directly, 16 in flight, {args.requests:,} requests")  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch) / "home"
        with Client(home=home) as client:
            client.upload_model("forest", anchor_forest(X, y), sample=X.head(500))
            client.build_pipeline("forest").add_model_step("forest:1").deploy()
            _, token = client.services.init_access("bench")
        for name, (kind, path) in SCENARIOS.items():
            body = Path(scratch) / f"{kind}.json"
            body.write_bytes(bodies[kind])
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(body), path, token, str(args.requests), "1" if args.profile else "0"],
                env={"FINALMILE_HOME": str(home), "PATH": str(Path(sys.executable).parent)},
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            if args.profile:
                Console().print(f"[bold]{name}[/bold]\n{out.stderr}")
            found = json.loads(out.stdout.strip().splitlines()[-1])
            table.add_row(name, f"{found['wall_us']:,.1f}", f"{found['cpu_us']:,.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()
