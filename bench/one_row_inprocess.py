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
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import orjson
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from asgi_direct import deployed_forest  # noqa: E402
from runtimes import data  # noqa: E402
from serving import v2_named, v2_tensor  # noqa: E402

SCENARIOS = {
    "V2 JSON, 29 named inputs": ("named", "/v2/models/forest/infer"),
    "V2 JSON, one [1, 29] tensor": ("tensor", "/v2/models/forest/infer"),
    "records JSON, one row": ("records", "/pipelines/forest/infer"),
}

CHILD = r"""
import asyncio, cProfile, json, pstats, sys, time
import uvloop
sys.path.insert(0, sys.argv[6])
from asgi_direct import DirectApp
body, path, token = open(sys.argv[1], "rb").read(), sys.argv[2], sys.argv[3]
count, profiled = int(sys.argv[4]), sys.argv[5] == "1"
async def client(app, n):
    for _ in range(n):
        await app.post()
async def main():
    app = DirectApp(body, path, token)
    await app.start()
    await asyncio.gather(*(client(app, 200) for _ in range(16)))
    profile = cProfile.Profile() if profiled else None
    wall, cpu = time.perf_counter(), time.process_time()
    if profile:
        profile.enable()
    await asyncio.gather(*(client(app, count // 16) for _ in range(16)))
    if profile:
        profile.disable()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await app.stop()
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
        token = deployed_forest(home, X, y)
        for name, (kind, path) in SCENARIOS.items():
            body = Path(scratch) / f"{kind}.json"
            body.write_bytes(bodies[kind])
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(body), path, token, str(args.requests), "1" if args.profile else "0",
                 str(Path(__file__).parent)],
                env={"FINALMILE_HOME": str(home), "PATH": str(Path(sys.executable).parent)}
                | {k: v for k, v in os.environ.items() if k == "PYTHONPATH"},  # another checkout's src, to compare
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            if args.profile:
                Console().print(f"[bold]{name}[/bold]\n{out.stderr}")
            found = json.loads(out.stdout.strip().splitlines()[-1])
            table.add_row(name, f"{found['wall_us']:,.1f}", f"{found['cpu_us']:,.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()
