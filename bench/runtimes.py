"""Rows per second: native framework vs finalmile's converted (ONNX) runtime vs ONNX Runtime called directly.

    .venv/bin/python bench/runtimes.py [--seconds 1.0]

Side by side in one run, for a logistic regression and a 100-tree depth-8 random forest on 29 features, and
100-tree XGBoost and LightGBM models, at batch 1 and batch 1,000. "native" is finalmile's native runtime (the
framework's own predict, Arrow in and out); "framework" is the bare framework call on a numpy array; "ORT direct"
is `session.run` on a prepared float32 array with the same session options.
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa
import xgboost as xgb
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from finalmile.cli.demo.timing import calls_per_second
from finalmile.runtimes.onnx import make_session

FEATURES = [f"v{i}" for i in range(29)]


def data(rows: int = 20_000) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.standard_normal((rows, 29)), columns=FEATURES)
    y = ((X.v0 - X.v1 + 0.5 * X.v2 * X.v3 + rng.normal(0, 0.5, rows)) > 0).astype(np.int64).to_numpy()
    return X, y


def anchor_forest(X: pd.DataFrame, y: np.ndarray, seed: int = 0) -> RandomForestClassifier:
    """The anchor forest every serving benchmark measures: 100 trees of depth 8 on `data()`'s 29 features."""
    return RandomForestClassifier(100, max_depth=8, n_jobs=1, random_state=seed).fit(X, y)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=1.0, help="measuring time per cell")
    args = parser.parse_args()
    console = Console()
    X, y = data()
    models = {
        "logistic regression": LogisticRegression(max_iter=500).fit(X, y),
        "random forest 100×d8": RandomForestClassifier(100, max_depth=8, n_jobs=1, random_state=0).fit(X, y),
        "xgboost 100": xgb.XGBClassifier(n_estimators=100, n_jobs=1, random_state=0).fit(X, y),
        "lightgbm 100": lgb.LGBMClassifier(n_estimators=100, n_jobs=1, verbose=-1).fit(X, y),
    }
    table = Table(
        "model",
        "batch",
        "framework",
        "native",
        "finalmile ONNX",
        "ORT direct",
        "speed-up",
        "vs ORT direct",
        title="rows/s, one thread each (bench/runtimes.py)",
    )
    rows_md = []
    with tempfile.TemporaryDirectory() as home, Client(home=home) as client, Progress(console=console) as progress:
        task = progress.add_task("measuring", total=len(models) * 2)
        for name, model in models.items():
            mv = client.upload_model(name.split()[0], model, sample=X.head(500))
            assert mv.runtime == "onnx", mv.conversion
            native, converted = mv.load("native"), mv.load()
            session = make_session(
                client.services.artifacts.verified_path(mv.record.onnx_sha256 or "").read_bytes(), client.settings
            )
            for batch in (1, 1000):
                frame = X.head(batch)
                arrow = pa.Table.from_pandas(frame, preserve_index=False)
                matrix = frame.to_numpy(np.float32)
                bare = frame.to_numpy()
                framework = calls_per_second(partial(model.predict_proba, bare), args.seconds) * batch
                slow = calls_per_second(partial(native.predict, arrow), args.seconds) * batch
                fast = calls_per_second(partial(converted.predict, arrow), args.seconds) * batch
                direct = calls_per_second(partial(session.run, None, {"input": matrix}), args.seconds) * batch
                cells = [
                    name,
                    str(batch),
                    f"{framework:,.0f}",
                    f"{slow:,.0f}",
                    f"{fast:,.0f}",
                    f"{direct:,.0f}",
                    f"{fast / slow:.1f}×",
                    f"{fast / direct:.0%}",
                ]
                table.add_row(*cells)
                rows_md.append("| " + " | ".join(cells) + " |")
                progress.advance(task)
    console.print(table)
    console.print("| model | batch | framework | native | finalmile ONNX | ORT direct | speed-up | vs ORT direct |")
    console.print("|---|---|---|---|---|---|---|---|")
    for row in rows_md:
        console.print(row)


if __name__ == "__main__":
    main()
