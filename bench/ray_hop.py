"""What one Ray Serve deployment-handle call costs here, with Ray Serve's defaults and with the two settings
`finalmile.backends.ray` sets (figures in bench/README.md).

    .venv/bin/python bench/ray_hop.py [--calls 1000]

Each setting runs in a fresh process with a local Ray cluster of 2 CPUs and one echo replica (1 CPU), sending an
8-row, 29-wide Arrow table and getting it back: sequentially and from 2 and 4 threads (`.result()`), and awaited
from an event loop at concurrency 1, 2 and 4. Reports calls/s and the p50 latency, and for the awaited calls the
calling process's CPU per call (all its threads: Serve's router, gRPC), which bounds a front's calls per core.
The last setting calls a plain Ray actor (1 CPU) instead of a Serve replica: what a channel beside the deployment
handles would save.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

SETTINGS = {
    "Ray Serve defaults": {},
    "gRPC": {"RAY_SERVE_USE_GRPC_BY_DEFAULT": "1"},
    "gRPC, user code on the replica's loop": {
        "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    },
    "both, and the table as an IPC stream under plain pickle (finalmile's)": {
        "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
        "BENCH_PAYLOAD": "ipc",
    },
    "for comparison, no Serve: a plain Ray actor's async method, the same IPC stream": {
        "BENCH_PAYLOAD": "ipc",
        "BENCH_TARGET": "actor",
    },
}


def measure(calls: int) -> dict[str, list[float]]:
    import numpy as np
    import pyarrow as pa
    import ray
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    quiet = {"enable_access_log": False, "log_level": "WARNING"}
    serve.start(proxy_location="Disabled", logging_config=quiet)

    @serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=8, logging_config=quiet)
    class Echo:
        async def run(self, table: pa.Table) -> pa.Table:
            return table

    handle = serve.run(Echo.bind(), name="echo", route_prefix=None)
    table: Any = pa.table({"input": pa.FixedSizeListArray.from_arrays(pa.array(np.random.rand(8 * 29)), 29)})
    if os.environ.get("BENCH_PAYLOAD") == "ipc":
        from finalmile.arrow.ipc import to_ipc

        handle = handle.options(request_serialization="pickle", response_serialization="pickle")
        table = to_ipc(table)
    send: Any = handle.run.remote
    result: Any = lambda sent: sent.result()  # noqa: E731
    if os.environ.get("BENCH_TARGET") == "actor":

        @ray.remote(num_cpus=1)
        class EchoActor:
            async def run(self, table: Any) -> Any:
                return table

        send, result = EchoActor.remote().run.remote, ray.get
    result(send(table))
    out: dict[str, list[float]] = {}

    def one() -> float:
        started = time.perf_counter()
        result(send(table))
        return time.perf_counter() - started

    for threads in (1, 2, 4):
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            took = list(pool.map(lambda _: one(), range(calls)))
        out[f"{threads} thread(s)"] = [calls / (time.perf_counter() - started), float(np.median(took)) * 1000, 0.0]

    async def awaited(concurrency: int) -> list[float]:
        took: list[float] = []

        async def worker(n: int) -> None:
            for _ in range(n):
                started = time.perf_counter()
                await send(table)
                took.append(time.perf_counter() - started)

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(calls // concurrency) for _ in range(concurrency)))
        cpu_per_call = (time.process_time() - cpu) / len(took)  # this process's threads: the caller's side of a call
        return [len(took) / (time.perf_counter() - started), float(np.median(took)) * 1000, cpu_per_call * 1e6]

    for concurrency in (1, 2, 4):
        out[f"awaited x{concurrency}"] = asyncio.run(awaited(concurrency))
    serve.shutdown()
    ray.shutdown()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.calls)))
        return
    for name, env in SETTINGS.items():
        clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_")}
        done = subprocess.run(
            [sys.executable, __file__, "--child", "--calls", str(args.calls)],
            env=clean | env,
            capture_output=True,
            text=True,
            check=True,
        )
        results = json.loads(done.stdout.strip().splitlines()[-1])
        cells = ", ".join(
            f"{k}: {rps:,.0f}/s p50 {p50:.2f} ms" + (f" caller CPU {cpu:,.0f} µs/call" if cpu else "")
            for k, (rps, p50, cpu) in results.items()
        )
        print(f"{name}: {cells}")


if __name__ == "__main__":
    main()
