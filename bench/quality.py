"""Quality before labels, multivariate drift and data quality against NannyML 0.13.1, side by side in one run.

    .venv/bin/python bench/quality.py [--rows 1000000]

Data quality is one column a monitor on both sides (nulls of f2, the range of f0, unseen values of `country`).
The data: `--rows` reference rows with labels and `--rows` analysis rows × 29 numeric features (+ one category),
a binary classifier's calibrated score and its label drawn from it; the analysis period is shifted (feature f0's
mean, and f1's correlation with f0 reversed), so accuracy falls and the columns move differently together.

finalmile reads it from its own inference log (a Parquet part written in the log's layout and with its writer's
options, queried with DuckDB, as a server's monitors do) through the SDK's monitors; NannyML 0.13.1 reads the same
rows as pandas DataFrames in an environment of its own (`bench/.venv-nannyml`, made with pip on the first run). Each
side runs each check in a fresh process (peak RSS is per process); every figure is one window / one chunk covering
the analysis period.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).parent
VENV = HERE / ".venv-nannyml"
FEATURES = [f"f{i}" for i in range(29)]
CHECKS = ["cbpe_accuracy", "cbpe_roc_auc", "pca", "classifier", "missing", "range", "unseen"]
START = datetime(2026, 1, 1, tzinfo=UTC)
ROW_GROUP = 65_536
"""Rows per row group of the bench's log part: the writer writes a row group per flush, a second's rows or fewer,
so a real log of a million rows has at least this many groups (one group of a million rows, as the first version of
this bench wrote, is read by one DuckDB thread)."""


def make_data(rows: int, folder: Path) -> None:
    """reference.parquet and analysis.parquet: features, `country`, `score`, `pred`, `y` (and a time each)."""
    rng = np.random.default_rng(0)
    weights = rng.normal(0, 0.4, len(FEATURES))
    weights[:2] = [1.5, 1.0]
    for name, shift in (("reference", False), ("analysis", True)):
        X = rng.standard_normal((rows, len(FEATURES)))
        rho = -0.8 if shift else 0.8
        X[:, 1] = rho * X[:, 0] + np.sqrt(1 - rho**2) * X[:, 1]
        if shift:
            X[:, 0] = X[:, 0] * 0.5
        X[rng.random(rows) < 0.01, 2] = np.nan
        logit = np.nan_to_num(X) @ weights
        score = 1 / (1 + np.exp(-logit))
        table = pa.table({f: X[:, i] for i, f in enumerate(FEATURES)})
        countries = np.array(["fr", "de", "es", "it"] + (["pl"] if shift else []))
        table = table.append_column("country", pa.array(countries[rng.integers(0, len(countries), rows)]))
        table = table.append_column("score", pa.array(score))
        table = table.append_column("pred", pa.array((score >= 0.5).astype(np.int64)))
        table = table.append_column("y", pa.array((rng.random(rows) < score).astype(np.int64)))
        offset = 0 if name == "reference" else 3600
        times = START + timedelta(seconds=offset) + np.arange(rows) * timedelta(microseconds=3_000_000_000 // rows)
        table = table.append_column("time", pa.array(times, pa.timestamp("us", tz="UTC")))
        pq.write_table(table, folder / f"{name}.parquet")


# -- finalmile --------------------------------------------------------------------------------------------------------


def finalmile_store(folder: Path) -> Path:
    """A store whose pipeline `p` logged the analysis rows (written as one Parquet part in the log's layout)."""
    from sklearn.linear_model import LogisticRegression

    from finalmile import Client
    from finalmile.arrow.files import log_parquet_options

    home = folder / "home"
    analysis = pq.read_table(folder / "analysis.parquet")
    with Client(home=home) as client:
        small = analysis.slice(0, 200).to_pandas()
        client.upload_model(
            "m", LogisticRegression().fit(small[FEATURES].fillna(0), small.y), sample=small[FEATURES].fillna(0)
        )
        client.build_pipeline("p").add_model_step("m:1").deploy()
    n = analysis.num_rows
    log = {
        "time": analysis.column("time"),
        "request_id": pa.array([f"{i:032x}" for i in range(n)]),
        "row": pa.array(np.zeros(n, np.int32)),
        "pipeline_version": pa.array(np.ones(n, np.int32)),
        "variant": pa.nulls(n, pa.string()),
        "model_versions": pa.array(["m:1"] * n),
        "latency_ms": pa.array(np.full(n, 0.1)),
        "status": pa.array(["ok"] * n),
    }
    log |= {f"in_{f}": analysis.column(f) for f in [*FEATURES, "country"]}
    log |= {"out_score": analysis.column("score"), "out_label": analysis.column("pred")}
    part = home / "logs" / "pipeline=p" / f"date={START:%Y-%m-%d}"
    part.mkdir(parents=True, exist_ok=True)
    table = pa.table(log)  # as the log's writer writes a part: its Parquet options, a row group per flush
    pq.write_table(table, part / "bench.parquet", row_group_size=ROW_GROUP, **log_parquet_options(table.schema))
    return home


def run_finalmile(folder: Path, check: str) -> dict[str, float]:
    import pandas as pd
    import sklearn.ensemble  # noqa: F401  (imported before the clock starts, as NannyML is on its side)
    import sklearn.isotonic  # noqa: F401
    import sklearn.model_selection  # noqa: F401

    from finalmile import Client

    reference = pd.read_parquet(folder / "reference.parquet")
    end = START + timedelta(hours=2)
    started = time.perf_counter()
    with Client(home=folder / "home") as client:
        if check.startswith("cbpe"):
            metric = check.removeprefix("cbpe_")
            frame = reference[["score", "y"]].rename(columns={"y": "label"})
            monitor = client.build_monitor("e", "p", "estimated_performance", metric=metric, window="2h",
                                           reference=frame)  # fmt: skip
            values = [monitor.preview(START, end).score.iloc[0]]
        elif check in ("pca", "classifier"):
            monitor = client.build_monitor("mv", "p", "multivariate_drift", columns=FEATURES, method=check,
                                           baseline=reference[FEATURES], window="2h")  # fmt: skip
            values = [monitor.preview(START, end).score.iloc[0]]
        else:
            kinds = {"missing": ("null_rate", ["f2"]), "range": ("out_of_range", ["f0"]),
                     "unseen": ("unseen_category", ["country"])}  # fmt: skip
            test, columns = kinds[check]
            values = []
            for column in columns:
                monitor = client.build_monitor(f"q-{column}", "p", "data_quality", column=column, check=test,
                                               baseline=reference[[column]], window="2h")  # fmt: skip
                values.append(monitor.preview(START, end).score.iloc[0])
    took = time.perf_counter() - started
    return {"seconds": took, "value": float(np.nansum(values)), "peak_mib": _peak()}


# -- NannyML (in its own environment) --------------------------------------------------------------------------------

NANNYML = r"""
import json, resource, sys, time
import numpy as np, pandas as pd, nannyml as nml
folder, check = sys.argv[1], sys.argv[2]
features = [f"f{i}" for i in range(29)]
reference = pd.read_parquet(f"{folder}/reference.parquet")
analysis = pd.read_parquet(f"{folder}/analysis.parquet")
started = time.perf_counter()
if check.startswith("cbpe"):
    metric = check.removeprefix("cbpe_")
    calc = nml.CBPE(y_pred_proba="score", y_pred="pred", y_true="y", metrics=[metric], chunk_number=1,
                    problem_type="classification_binary")
    result = calc.fit(reference).estimate(analysis).filter(period="analysis").to_df()
    value = float(result[(metric, "value")].iloc[0])
elif check == "pca":
    calc = nml.DataReconstructionDriftCalculator(column_names=features, chunk_number=1)
    frame = calc.fit(reference).calculate(analysis).filter(period="analysis").to_df()
    value = float(frame[("reconstruction_error", "value")].iloc[0])
elif check == "classifier":
    calc = nml.DomainClassifierCalculator(feature_column_names=features, chunk_number=1)
    frame = calc.fit(reference).calculate(analysis).filter(period="analysis").to_df()
    value = float(frame[("domain_classifier_auroc", "value")].iloc[0])
else:
    make = {"missing": lambda: nml.MissingValuesCalculator(column_names=["f2"], chunk_number=1, normalize=True),
            "range": lambda: nml.NumericalRangeCalculator(column_names=["f0"], chunk_number=1, normalize=True),
            "unseen": lambda: nml.UnseenValuesCalculator(column_names=["country"], chunk_number=1, normalize=True)}
    frame = make[check]().fit(reference).calculate(analysis).filter(period="analysis").to_df()
    value = float(np.nansum([frame[c].iloc[0] for c in frame.columns if c[-1] == "value"]))
took = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": took, "value": value, "peak_mib": peak}))
"""


def nannyml_env() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "nannyml==0.13.1", "pandas<3", "statsmodels"],
                       check=True)  # fmt: skip
    return python


def _peak() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(argv: list[str]) -> dict[str, float]:
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode:
        return {"seconds": float("nan"), "value": float("nan"), "peak_mib": float("nan"), "error": out.stderr[-300:]}  # type: ignore[dict-item]
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--checks", nargs="+", default=CHECKS)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_finalmile(Path(args.child[0]), args.child[1])))
        return
    python = nannyml_env()
    table = Table("check", "finalmile", "NannyML 0.13.1", "speed-up", "finalmile peak", "NannyML peak", "memory ratio",
                  title=f"{args.rows:,} reference + {args.rows:,} analysis rows × 29 features")  # fmt: skip
    with tempfile.TemporaryDirectory() as workdir:
        folder = Path(workdir)
        make_data(args.rows, folder)
        finalmile_store(folder)
        for check in args.checks:
            ours = _child([sys.executable, __file__, "--child", str(folder), check])
            theirs = _child([str(python), "-c", NANNYML, str(folder), check])
            table.add_row(
                check,
                f"{ours['value']:.4f} in {ours['seconds']:.2f} s",
                f"{theirs['value']:.4f} in {theirs['seconds']:.2f} s" if "error" not in theirs else theirs["error"],
                f"{theirs['seconds'] / ours['seconds']:.1f}×",
                f"{ours['peak_mib']:,.0f} MiB",
                f"{theirs['peak_mib']:,.0f} MiB",
                f"{ours['peak_mib'] / theirs['peak_mib']:.2f}",
            )
    Console().print(table)


if __name__ == "__main__":
    main()
