"""Inference-log benchmarks (figures in bench/README.md).

    apt-get install wrk
    .venv/bin/python bench/logs.py [--only serving|query|file] [--duration 1] [--pairs 80] [--control-pairs 40]
        [--servers 8]
        [--file-rows 10000000]

1. Serving throughput with logging on vs off, 1 and 1,000 rows per request, in alternating back-to-back pairs
   (wrk, V2 JSON), spread over several server starts; the cost is the median of the pairs' costs. A control
   measures two pipelines without logging the same way: its cost is the benchmark's own noise.
2. Hourly row counts and mean score over `--query-rows` logged rows (DuckDB over the Parquet log).
3. File inference through the 100-tree forest vs the in-process runtime, and peak memory for two file sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.progress import track
from sklearn.ensemble import RandomForestClassifier

from finalmile import Client

sys.path.insert(0, str(Path(__file__).parent))
from runtimes import data  # noqa: E402
from serving import v2_tensor, wrk  # noqa: E402

PIPELINES = ("a", "b", "c")


def serving_home(home: Path) -> Path:
    """A store with the 100-tree forest behind three pipelines, `a`, `b` and `c` (see `assign_roles`)."""
    X, y = data()
    with Client(home=home) as client:
        forest = RandomForestClassifier(100, max_depth=8, n_jobs=1, random_state=0).fit(X, y)
        mv = client.upload_model("forest", forest, sample=X.head(200))
        for name in PIPELINES:
            client.build_pipeline(name).add_model_step(mv).deploy(max_batch_size=1000)
    return home


def assign_roles(home: Path, start: int) -> dict[str, str]:
    """Deploy the pipelines with logging on for one of them: roles `logged`, `quiet` and `quiet-b` rotate with
    `start`, so that what is peculiar to one pipeline of one server (where its model landed in memory, say) is not
    always on the same side."""
    roles = dict(zip(("logged", "quiet", "quiet-b"), PIPELINES[start:] + PIPELINES[:start], strict=True))
    with Client(home=home) as client:
        for name in PIPELINES:
            client.pipeline(name).deploy(version=1, max_batch_size=1000, logging=name == roles["logged"])
    return roles


def serving(
    home: Path, duration: int, pairs: int, control_pairs: int, servers: int, workdir: Path
) -> dict[str, dict[str, float]]:
    """Throughput with logging on (`logged`) and off (`quiet`), measured in back-to-back pairs whose order
    alternates (logged first, then quiet first): each pair shares the machine's noise of the moment, and the cost of
    logging is the median of the pairs' costs. The pairs are spread over `servers` server starts, with the roles
    rotating over three pipelines: one server's two pipelines differ by a few percent even when neither logs (the
    control, below, found 3–7% within one server), and that difference changes from one start to the next. The
    control measures `quiet-b` against `quiet`, both without logging: its cost is the benchmark's own noise and
    bias. wrk is pinned to the last core; the server's CPU time per row (from /proc) is reported beside throughput."""
    X, _ = data()
    port = 18090
    wrk_cpus = last_core()
    measured: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for number in track(range(servers), description="servers"):
        roles = assign_roles(home, number % len(PIPELINES))
        server = start_server(home, ["-m", "finalmile", "serve", "--port", str(port), "--no-auth"])  # logging alone
        try:
            wait_ready(port, PIPELINES)
            for rows in (1, 1000):
                body = v2_tensor(X.head(rows))

                def run(
                    role: str,
                    seconds: int,
                    body: bytes = body,
                    rows: int = rows,
                    roles: dict[str, str] = roles,
                    pid: int = server.pid,
                ) -> tuple[float, float]:
                    """Rows per second, and the server's CPU microseconds per row."""
                    url = f"http://127.0.0.1:{port}/v2/models/{roles[role]}/infer"
                    cpu = cpu_seconds(Path(f"/proc/{pid}/stat"))
                    rate = wrk(url, body, "application/json", seconds, 16, workdir, wrk_cpus)["rps"] * rows
                    return rate, (cpu_seconds(Path(f"/proc/{pid}/stat")) - cpu) / (rate * seconds) * 1e6

                for role in roles:  # warm-up
                    run(role, 2)
                for kind, (a, b), n in (
                    ("", ("logged", "quiet"), pairs),
                    (", control", ("quiet-b", "quiet"), control_pairs),
                ):
                    runs = measured.setdefault(f"{rows} rows/request{kind}", {a: [], b: []})
                    share = n // servers + (number < n % servers)  # n pairs in all
                    for role in alternating(share, a, b):
                        runs[role].append(run(role, duration))
        finally:
            server.terminate()
            server.wait()
    return {key: _summary(*runs.items()) for key, runs in measured.items() if all(runs.values())}


def alternating(pairs: int, a: str, b: str) -> Iterator[str]:
    """`a` and `b` in `pairs` back-to-back pairs whose order alternates (a first, then b first)."""
    for i in range(pairs):
        yield from (a, b) if i % 2 == 0 else (b, a)


def start_server(home: Path, arguments: list[str]) -> subprocess.Popen[bytes]:
    """This Python run with `arguments` (a server) on the store at `home`."""
    return subprocess.Popen(
        [sys.executable, *arguments], env={"FINALMILE_HOME": str(home), "PATH": str(Path(sys.executable).parent)}
    )


def last_core() -> set[int] | None:
    """The core wrk is pinned to, leaving the others to the server (None on a single core)."""
    cores = sorted(os.sched_getaffinity(0))
    return {cores[-1]} if len(cores) > 1 else None


def wait_ready(port: int, names: tuple[str, ...]) -> None:
    for _ in range(300):
        try:
            if all(httpx.get(f"http://127.0.0.1:{port}/v2/models/{n}/ready").status_code == 200 for n in names):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError("the server did not get ready")


def _summary(a_runs: tuple[str, list[tuple[float, float]]], b_runs: tuple[str, list[tuple[float, float]]]) -> dict:
    """`a` against `b` over pairs of runs: the cost of `a` (1 − its rate over b's) as the median of the pairs'
    costs with their quartiles and a bootstrap interval for the median, and the medians of each one's rate and CPU
    per row."""
    (a, a_measured), (b, b_measured) = a_runs, b_runs
    rate = {a: np.array([r for r, _ in a_measured]), b: np.array([r for r, _ in b_measured])}
    cpu = {a: np.array([c for _, c in a_measured]), b: np.array([c for _, c in b_measured])}
    costs = 1 - rate[a] / rate[b]
    # How far the median could be off by chance: the 5th and 95th percentiles of the medians of 10,000 resamples.
    resampled = np.median(np.random.default_rng(0).choice(costs, (10_000, len(costs))), axis=1)
    return {
        f"{a} rows/s (median)": float(np.median(rate[a])),
        f"{b} rows/s (median)": float(np.median(rate[b])),
        f"cost of {a} (median of pairs)": float(np.median(costs)),
        "cost, 25th percentile": float(np.quantile(costs, 0.25)),
        "cost, 75th percentile": float(np.quantile(costs, 0.75)),
        "median cost, 90% interval (bootstrap)": [float(np.quantile(resampled, q)) for q in (0.05, 0.95)],
        f"{a} server CPU us/row (median)": float(np.median(cpu[a])),
        f"{b} server CPU us/row (median)": float(np.median(cpu[b])),
        "extra server CPU per row (median of pairs)": float(np.median(cpu[a] / cpu[b] - 1)),
        "pairs": len(costs),
    }


def cpu_seconds(stat: Path) -> float:
    """User and system CPU seconds from a /proc `stat` file: a process's (all its threads) or one thread's."""
    fields = stat.read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def query(rows: int, workdir: Path) -> dict[str, float]:
    """Write `rows` synthetic log rows in the log's own layout, then time the hourly query."""
    home = workdir / "query-home"
    rng = np.random.default_rng(0)
    per_file = 1_000_000
    start = 1_763_000_000_000_000
    for i in range(0, rows, per_file):
        n = min(per_file, rows - i)
        day = f"2026-11-{10 + (i // (4 * per_file)):02d}"
        directory = home / "logs" / "pipeline=fraud" / f"date={day}"
        directory.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            pa.table(
                {
                    "time": pa.array(start + rng.integers(0, 86_400_000_000, n)).cast(pa.timestamp("us", tz="UTC")),
                    "request_id": pa.array(np.char.mod("%032x", rng.integers(0, 2**62, n))),
                    "row": pa.array(np.zeros(n, dtype=np.int32)),
                    "pipeline_version": pa.array(np.ones(n, dtype=np.int32)),
                    "out_score": pa.array(rng.random(n)),
                    "in_amount": pa.array(rng.lognormal(3, 1, n)),
                }
            ),
            directory / f"part-{i}.parquet",
        )
    with Client(home=home) as client:
        sql = "SELECT date_trunc('hour', time) AS hour, count(*) AS n, avg(out_score) AS mean FROM logs GROUP BY 1"
        client.query(sql)  # warm the file cache
        times = []
        for _ in range(5):
            started = time.perf_counter()
            result = client.query(sql)
            times.append(time.perf_counter() - started)
        assert int(result.n.sum()) == rows
    elapsed = {"median": sorted(times)[2], "fastest": min(times), "slowest": max(times)}
    return elapsed


def file_inference(rows: int, workdir: Path) -> dict[str, float]:
    """Score a `rows`-row Parquet file; the model's own rate on the same batches, and the peak memory of a process
    that only scores the file (set-up — training, writing the input — happens in another process)."""
    home = workdir / f"file-home-{rows}"
    setup = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import pyarrow as pa, pyarrow.parquet as pq
from sklearn.ensemble import RandomForestClassifier
from finalmile import Client
from runtimes import data
X, y = data()
with Client(home={str(home)!r}) as c:
    forest = RandomForestClassifier(100, max_depth=8, n_jobs=1, random_state=0).fit(X, y)
    mv = c.upload_model("forest", forest, sample=X.head(200))
    c.build_pipeline("forest").add_model_step(mv).deploy()
    schema = pa.Table.from_pandas(X.head(1), preserve_index=False).schema
    with pq.ParquetWriter({str(home / "in.parquet")!r}, schema) as w:
        for i in range(0, {rows}, 500_000):
            n = min(500_000, {rows} - i)
            w.write_table(pa.Table.from_pandas(X.sample(n, replace=True, random_state=i), preserve_index=False))
"""
    score = f"""
import json, resource, time
import pyarrow as pa, pyarrow.parquet as pq
from finalmile import Client
with Client(home={str(home)!r}) as c:
    c.services.sync()
    p = c.pipeline("forest")
    started = time.perf_counter()
    p.infer_file({str(home / "in.parquet")!r}, {str(home / "out.parquet")!r}, batch_size=50_000, progress=False)
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    runtime = c.model("forest:1").load()
    batches = pq.ParquetFile({str(home / "in.parquet")!r}).iter_batches(batch_size=50_000)
    sample = [pa.Table.from_batches([next(batches)]) for _ in range(3)]
    started = time.perf_counter()
    for table in sample:
        runtime.predict(table)
    in_process = sum(t.num_rows for t in sample) / (time.perf_counter() - started)
    print(json.dumps({{"rows_per_s": {rows} / elapsed, "in_process_rows_per_s": in_process, "peak_rss_mb": peak}}))
"""
    subprocess.run([sys.executable, "-c", setup], check=True, capture_output=True)
    out = subprocess.run([sys.executable, "-c", score], capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["share_of_in_process"] = result["rows_per_s"] / result["in_process_rows_per_s"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=1, help="seconds per wrk run")
    parser.add_argument("--pairs", type=int, default=80, help="logged/quiet pairs per request size")
    parser.add_argument("--control-pairs", type=int, default=40, help="quiet/quiet-b pairs (0: no control)")
    parser.add_argument("--servers", type=int, default=8, help="server starts the pairs are spread over")
    parser.add_argument("--query-rows", type=int, default=10_000_000)
    parser.add_argument("--file-rows", type=int, default=10_000_000)
    parser.add_argument("--only", choices=["serving", "query", "file"], help="run one part")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp())
    report: dict[str, object] = {}
    if args.only in (None, "serving"):
        home = serving_home(workdir / "serve-home")
        report["serving"] = serving(home, args.duration, args.pairs, args.control_pairs, args.servers, workdir)
    if args.only in (None, "query"):
        report["hourly query seconds"] = {f"{args.query_rows:,} rows": query(args.query_rows, workdir)}
    if args.only in (None, "file"):
        report["file inference"] = {
            f"{n:,} rows": file_inference(n, workdir) for n in (args.file_rows // 5, args.file_rows)
        }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
