"""Drift computation: finalmile vs Evidently's DataDriftPreset on the same data (figures in bench/README.md).

    .venv/bin/python bench/drift.py [--rows 1000000] [--columns 29]

Evidently is installed only in this benchmark's own environment (`bench/.venv-evidently`, created on first run
with `pip install 'evidently==0.7.*' 'pandas<3'`), never in finalmile's. Every measurement runs in a fresh process
that builds the same data from the same seed (baseline N(0, 1); window column j ~ N(0.02·j, 1 + 0.01·j)), times only
the drift computation over every column, and reports the process's peak RSS (data included, as the issue's 1.6 GB
is).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).parent
EVIDENTLY_ENV = HERE / ".venv-evidently"

DATA = """
import numpy as np
def data(rows, columns):
    rng = np.random.default_rng(0)
    baseline, window = np.empty((rows, columns), order="F"), np.empty((rows, columns), order="F")
    for j in range(columns):  # column by column: no temporary copy of the whole table
        baseline[:, j] = rng.standard_normal(rows)
        window[:, j] = rng.standard_normal(rows) * (1 + 0.01 * j) + 0.02 * j
    return baseline, window
"""

FINALMILE = (
    DATA
    + """
import json, resource, sys, time
from finalmile.monitoring import drift
rows, columns, metric = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
baseline, window = data(rows, columns)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
started = time.perf_counter()
scores = []
for j in range(columns):
    b, w = baseline[:, j], window[:, j]
    if metric == "psi":
        edges = drift.bin_edges(b)
        scores.append(drift.psi(drift.shares(drift.histogram(b, edges)), drift.shares(drift.histogram(w, edges))))
    else:
        scores.append(drift.wasserstein(b, w))
elapsed = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
# An independent check on the last column: numpy's histogram (PSI) and scipy (Wasserstein).
if metric == "psi":
    inner = np.quantile(b, np.linspace(0, 1, 6))
    counts = lambda x: np.r_[(x < inner[0]).sum(), np.histogram(x, inner)[0], (x > inner[-1]).sum()]
    p, q = counts(b) / len(b), counts(w) / len(w)
    p, q = np.maximum(p, 1e-4), np.maximum(q, 1e-4)
    check = float(np.sum((q - p) * np.log(q / p)))
else:
    from scipy import stats
    check = float(stats.wasserstein_distance(b, w))
print(json.dumps({"seconds": elapsed, "peak_rss_mb": peak, "data_rss_mb": before, "last_score": scores[-1],
                  "independent_check": check}))
"""
)

EVIDENTLY = (
    DATA
    + """
import json, resource, sys, time
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
rows, columns, metric = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
baseline, window = data(rows, columns)
names = [f"f{j}" for j in range(columns)]
reference, current = pd.DataFrame(baseline, columns=names), pd.DataFrame(window, columns=names)
del baseline, window
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
started = time.perf_counter()
snapshot = Report([DataDriftPreset(method=metric)]).run(current, reference)
elapsed = time.perf_counter() - started
print(json.dumps({"seconds": elapsed, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "data_rss_mb": before, "version": __import__("evidently").__version__}))
"""
)


def evidently_python() -> Path:
    python = EVIDENTLY_ENV / "bin" / "python"
    if not python.exists():
        print("creating bench/.venv-evidently (once) …", file=sys.stderr)
        venv.create(EVIDENTLY_ENV, with_pip=True)
        # Evidently 0.7 imports pandas internals that pandas 3 removed.
        subprocess.run([python, "-m", "pip", "install", "-q", "evidently==0.7.*", "pandas<3"], check=True)
    return python


def measure(python: Path | str, script: str, rows: int, columns: int, metric: str) -> dict[str, float]:
    out = subprocess.run(
        [str(python), "-c", script, str(rows), str(columns), metric], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=29)
    parser.add_argument("--skip-evidently", action="store_true")
    args = parser.parse_args()
    report = {}
    for metric in ("psi", "wasserstein"):
        ours = measure(sys.executable, FINALMILE, args.rows, args.columns, metric)
        report[f"finalmile {metric}"] = ours
        if not args.skip_evidently:
            theirs = measure(evidently_python(), EVIDENTLY, args.rows, args.columns, metric)
            report[f"evidently {metric}"] = theirs
            report[f"{metric}: speed-up"] = theirs["seconds"] / ours["seconds"]
            report[f"{metric}: peak memory ratio"] = ours["peak_rss_mb"] / theirs["peak_rss_mb"]
        print(json.dumps(report, indent=1), flush=True)


if __name__ == "__main__":
    main()
