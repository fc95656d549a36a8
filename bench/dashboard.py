"""Dashboard page times with 1,000,000 logged rows for one pipeline (figures in bench/README.md).

    .venv/bin/python bench/dashboard.py [--rows 1000000] [--requests 40]

Builds a store like the demo's: a fraud pipeline with an 80/20 A/B split of two logistic regressions,
`--rows` rows scored through it with logging on (file inference, so every row lands in the one inference log with
its variant and model versions), ground truth for a tenth of them, and a drift monitor with its results. Then one
`finalmile serve` process (auth on) serves the dashboard, and each page is fetched `--requests` times in turn
over loopback with a logged-in session cookie; p50/p95 are of the whole HTTP round trip, so they bound the server's
time from above. The target is p95 <= 500 ms for every page.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import track
from rich.table import Table
from sklearn.linear_model import LogisticRegression

from finalmile import Client

FEATURES = ["v1", "v2", "amount"]
PORT = 8391


def transactions(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, 2)), columns=["v1", "v2"])
    frame["amount"] = rng.gamma(2.0, 20.0, rows) + np.arange(rows) * 1e-9  # unique: the ground truth's key
    frame["is_fraud"] = ((frame.v1 + frame.amount / 80 + rng.normal(0, 0.5, rows)) > 1.5).astype(int)
    return frame


def build(home: Path, rows: int) -> str:
    """The store with `rows` logged rows; returns an owner token."""
    with Client(home=home) as client:
        train = transactions(5_000, 1)
        X, y = train[FEATURES], train.is_fraud
        client.upload_model("fraud", LogisticRegression(max_iter=500).fit(X, y), sample=X.head(100), alias="champion")
        client.upload_model("fraud", LogisticRegression(C=0.01).fit(X, y), sample=X.head(100), alias="challenger")
        split = {"champion": (0.8, "fraud@champion"), "challenger": (0.2, "fraud@challenger")}
        client.build_pipeline("fraud").add_split(split).deploy()
        start = datetime.now(UTC) - timedelta(minutes=1)
        client.build_assay("amount-drift", "fraud", "in_amount", baseline=X, window=60, warning=0.1, alert=0.25).save(
            start
        )
        traffic = transactions(rows, 2)
        source = home / "traffic.parquet"
        traffic[FEATURES].to_parquet(source)
        started = time.perf_counter()
        client.pipeline("fraud").infer_file(source, home / "scores.parquet", batch_size=10_000, log=True)
        print(f"scored and logged {rows:,} rows in {time.perf_counter() - started:.1f} s")
        labels = traffic.sample(rows // 10, random_state=3)
        client.pipeline("fraud").add_ground_truth(labels[["amount", "is_fraud"]], key="amount")
        logged = int(client.query("SELECT count(*) AS n FROM logs WHERE pipeline = 'fraud'").n[0])
        assert logged == rows, f"{logged:,} rows logged, expected {rows:,}"
        time.sleep(61)  # the monitor's first one-minute window ends
        print(f"monitor results stored: {client.run_monitors()}")
        return client.services.init_access("bench")[1]


def serve(home: Path, port: int = PORT, *flags: str) -> subprocess.Popen[bytes]:
    """`finalmile serve` on `home` (monitors idle), once it answers; bench/streams.py starts its server here too."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # Ray starts workers via bash
    env = {"FINALMILE_HOME": str(home), "PATH": path, "FINALMILE_MONITOR_POLL_S": "3600"}
    env |= {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}  # another tree's code
    server = subprocess.Popen([sys.executable, "-m", "finalmile", "serve", "--port", str(port), *flags], env=env)
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.kill()
    raise TimeoutError("the server did not get ready")


def measure(token: str, requests: int) -> list[tuple[str, float, float, float]]:
    """(page, p50 ms, p95 ms, slowest ms) for each page."""
    with httpx.Client(base_url=f"http://127.0.0.1:{PORT}", timeout=60) as browser:
        login = browser.post("/ui/login", data={"token": token, "next": "/ui"})
        assert login.status_code == 303, login.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', browser.get("/ui/sql").text)
        assert csrf is not None, "the SQL page carries no CSRF secret"
        sql = (
            "SELECT date_trunc('hour', time) AS hour, variant, count(*) AS rows, avg(out_score) AS mean_score "
            "FROM logs WHERE pipeline = 'fraud' GROUP BY ALL ORDER BY 1"
        )
        pages = {
            "overview": lambda: browser.get("/ui"),
            "overview table (htmx)": lambda: browser.get("/ui", headers={"hx-request": "true"}),
            "pipeline": lambda: browser.get("/ui/pipelines/fraud"),
            "models": lambda: browser.get("/ui/models"),
            "model": lambda: browser.get("/ui/models/fraud"),
            "monitors": lambda: browser.get("/ui/monitors"),
            "monitor": lambda: browser.get("/ui/monitors/amount-drift"),
            "sql page": lambda: browser.get("/ui/sql"),
            "sql: hourly rows by variant": lambda: browser.post("/ui/sql", data={"sql": sql, "csrf": csrf[1]}),
            "sql: csv download": lambda: browser.get("/ui/sql/csv", params={"sql": sql}),
        }
        figures = []
        for page, fetch in track(pages.items(), description="pages"):
            answer = fetch()  # warm: the first DuckDB scan reads the Parquet footers from disk
            assert answer.status_code == 200, (page, answer.status_code, answer.text[:300])
            times = []
            for _ in range(requests):
                started = time.perf_counter()
                answer = fetch()
                times.append((time.perf_counter() - started) * 1000)
                assert answer.status_code == 200, (page, answer.text[:300])
            times.sort()
            p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
            figures.append((page, statistics.median(times), p95, times[-1]))
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=40, help="fetches of each page")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        home = Path(workdir) / "home"
        token = build(home, args.rows)
        server = serve(home)
        try:
            figures = measure(token, args.requests)
        finally:
            server.terminate()
            server.wait()
    table = Table(title=f"dashboard pages, {args.rows:,} logged rows, {args.requests} fetches each")
    for column in ("page", "p50 ms", "p95 ms", "slowest ms", "p95 <= 500 ms"):
        table.add_column(column, justify="left" if column == "page" else "right")
    for page, p50, p95, slowest in figures:
        table.add_row(page, f"{p50:.1f}", f"{p95:.1f}", f"{slowest:.1f}", "met" if p95 <= 500 else "NOT MET")
    Console().print(table)


if __name__ == "__main__":
    main()
