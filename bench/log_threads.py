"""Where logging's CPU goes inside the server, thread by thread (figures in bench/README.md).

    apt-get install wrk
    .venv/bin/python bench/log_threads.py [--rows 1] [--pairs 30] [--duration 2]

Runs `finalmile serve` in a child process instrumented from the inside: each thread's CPU time from /proc, named by
Python's thread names (the kernel only knows "python"); the log writer's phases by `time.thread_time`; the cyclic
GC's time. wrk drives the `logged` and `quiet` pipelines in alternating back-to-back pairs, as in bench/logs.py.
For every measure it prints the medians per request and the median of the pairs' ratios with their quartiles.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from logs import (  # noqa: E402
    PIPELINES,
    alternating,
    assign_roles,
    cpu_seconds,
    last_core,
    serving_home,
    start_server,
    wait_ready,
)
from runtimes import data  # noqa: E402
from serving import v2_tensor, wrk  # noqa: E402

PHASES = ("_append", "_persist", "_sync_all", "_compact_all")


def serve_instrumented(port: int, stats_path: Path) -> None:
    """`finalmile serve`, writing its counters to `stats_path` whenever it gets SIGUSR1."""
    from finalmile.http.server import serve
    from finalmile.logs.writer import LogWriter

    counters: dict[str, float] = {}

    def timed(name: str) -> None:
        method = getattr(LogWriter, name)

        def wrapper(self: LogWriter, *args: object, **kwargs: object) -> object:
            started = time.thread_time()
            try:
                return method(self, *args, **kwargs)
            finally:
                counters[f"writer {name}"] = counters.get(f"writer {name}", 0.0) + time.thread_time() - started

        setattr(LogWriter, name, wrapper)

    for name in PHASES:
        timed(name)
    from finalmile.backends.batcher import Batcher

    run_tables = Batcher._run_tables

    def counted(self: Batcher, tables: list) -> object:
        counters["count: batches"] = counters.get("count: batches", 0.0) + 1
        return run_tables(self, tables)

    Batcher._run_tables = counted  # type: ignore[method-assign]
    gc_started = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            key = f"gc generation {info['generation']}"
            counters[key] = counters.get(key, 0.0) + time.perf_counter() - gc_started[0]

    gc.callbacks.append(on_gc)

    def dump(*_: object) -> None:
        # One name for the infer threads of every pipeline, so that logged and quiet runs compare line by line.
        names = {
            t.native_id: "infer" if t.name.startswith("infer-") else t.name.rsplit("_", 1)[0]
            for t in threading.enumerate()
        }
        threads: dict[str, float] = {}
        for task in Path(f"/proc/{os.getpid()}/task").iterdir():
            name = "thread " + names.get(int(task.name), "native")
            threads[name] = threads.get(name, 0.0) + cpu_seconds(task / "stat")
        stats_path.with_suffix(".tmp").write_text(json.dumps({**counters, **threads}))
        os.replace(stats_path.with_suffix(".tmp"), stats_path)

    signal.signal(signal.SIGUSR1, dump)
    os.environ["FINALMILE_AUTH"] = "false"  # loopback; this measures logging, not tokens
    serve(port=port)


def snapshot(pid: int, stats_path: Path) -> dict[str, float]:
    stats_path.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    for _ in range(500):
        if stats_path.exists():
            return json.loads(stats_path.read_text())
        time.sleep(0.01)
    raise TimeoutError("the server did not write its counters")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--duration", type=int, default=2, help="seconds per wrk run")
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "STATS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_instrumented(int(args.serve[0]), Path(args.serve[1]))
        return
    workdir = Path(tempfile.mkdtemp())
    home, stats, port = serving_home(workdir / "home"), workdir / "stats.json", 18092
    roles = assign_roles(home, 0)
    server = start_server(home, [__file__, "--serve", str(port), str(stats)])
    body = v2_tensor(data()[0].head(args.rows))
    try:
        wait_ready(port, PIPELINES)

        def run(name: str) -> dict[str, float]:
            """Microseconds per request for every counter (thread CPU, writer phases, GC) over one wrk run."""
            before = snapshot(server.pid, stats)
            url = f"http://127.0.0.1:{port}/v2/models/{roles[name]}/infer"
            rate = wrk(url, body, "application/json", args.duration, 16, workdir, last_core())["rps"]
            after = snapshot(server.pid, stats)
            requests = rate * args.duration
            per_request = {
                k: (v - before.get(k, 0.0)) / requests * (1 if k.startswith("count") else 1e6) for k, v in after.items()
            }
            per_request["all threads"] = sum(v for k, v in per_request.items() if k.startswith("thread "))
            return {"requests/s": rate, **per_request}

        for name in ("logged", "quiet"):  # warm-up
            run(name)
        measured: dict[str, list[dict[str, float]]] = {"logged": [], "quiet": []}
        for name in alternating(args.pairs, "logged", "quiet"):
            measured[name].append(run(name))
    finally:
        server.terminate()
        server.wait()
    print(f"{args.rows} rows/request, {args.pairs} pairs; per request: µs, or counts ('count: …')")
    print(f"{'':32} {'logged':>10} {'quiet':>10} {'pairs: logged/quiet - 1, quartiles':>36}")
    for key in sorted({k for runs in measured.values() for r in runs for k in r}):
        logged = np.array([r.get(key, 0.0) for r in measured["logged"]])
        quiet = np.array([r.get(key, 0.0) for r in measured["quiet"]])
        line = f"{key:32} {np.median(logged):10.2f} {np.median(quiet):10.2f}"
        if (quiet > 0).all():
            ratio = logged / quiet - 1
            q1, q2, q3 = np.quantile(ratio, [0.25, 0.5, 0.75]) * 100
            line += f" {q2:+13.1f}% [{q1:+.1f}%, {q3:+.1f}%]"
        print(line)


if __name__ == "__main__":
    main()
