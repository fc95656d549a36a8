"""A rollout step's evaluation over a large log: the three default gates (error rate, p99 latency, score PSI) for
both arms, plus the rows each arm has.

    .venv/bin/python bench/rollout.py [--rows 1000000]

The anchor forest (100 trees, depth 8, 29 features) serves as the champion and a second forest as the candidate, at
50% each; 4,000 real requests of one row are served through the rollout's split, and the log part is then copied
(fresh request ids) until the log holds `--rows` rows. The evaluation is timed five times (DuckDB reads the log's
Parquet parts each time, as a server's tick does); the median is the figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from finalmile import Client
from finalmile.rollouts.judge import judge, windows
from finalmile.rollouts.plan import RolloutPlan

sys.path.insert(0, str(Path(__file__).parent))
from replay import grow, served_with_candidate  # noqa: E402
from runtimes import data  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    args = parser.parse_args()
    X, y = data(5_000)
    table = Table("logged rows", "champion rows", "candidate rows", "evaluation (median of 5)", "decision")
    with tempfile.TemporaryDirectory() as workdir:
        home = Path(workdir) / "home"
        with Client(home=home) as client:
            pipeline = served_with_candidate(client, X, y)
            record = pipeline.rollout("forest:2", steps=[50, 100], step_every="1h", min_rows=500)
            for i in range(4_000):
                pipeline.infer(X.iloc[i : i + 1])
            client.services.logs.close()  # every row in Parquet, nothing left in a journal
            plan = RolloutPlan.model_validate(record.plan)
            end = datetime.now(UTC) + timedelta(minutes=1)
            arms = windows("forest", record.serving_version or 0, record.step_started_at, end, record.created_at, 50)
            for rows in args.rows:
                grow(home, rows)
                took = []
                for _ in range(5):
                    started = time.perf_counter()
                    verdict = judge(client.services.monitoring, arms, plan)
                    took.append(time.perf_counter() - started)
                counted = verdict.evidence["rows"]
                table.add_row(
                    f"{rows:,}", f"{counted['champion']:,}", f"{counted['candidate']:,}",
                    f"{statistics.median(took):.3f} s", f"{verdict.decision}: {verdict.reason[:60]}",
                )  # fmt: skip
    Console().print(table)


if __name__ == "__main__":
    main()
