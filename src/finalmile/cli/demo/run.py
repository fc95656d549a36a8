"""`finalmile demo`: the product end to end on embedded defaults, one step at a time.

Each step is a function over a shared `DemoState`; later capabilities (deployment, serving, logs, monitoring) add
steps to `STEPS` rather than rewriting the story.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from finalmile.cli.demo.monitoring import step_act, step_chart, step_monitor, step_traffic
from finalmile.cli.demo.quality import step_estimate, step_explain
from finalmile.cli.demo.rollout import step_bad_rollout, step_rollout
from finalmile.cli.demo.state import FEATURES, MODEL, DemoState
from finalmile.cli.demo.timing import calls_per_second
from finalmile.client import LocalClient


def fraud_dataset(rows: int = 20_000, seed: int = 7) -> pd.DataFrame:
    """A credit-card-fraud-like table: 28 anonymised components, an amount, and a rare `is_fraud` label."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, 28))
    amount = rng.lognormal(3.5, 1.2, rows)
    risk = 1.8 * X[:, 0] - 1.4 * X[:, 2] + 0.9 * X[:, 3] * X[:, 4] + 0.004 * amount + rng.normal(0, 1.0, rows)
    frame = pd.DataFrame(X, columns=FEATURES[:-1])
    frame["amount"] = amount.round(2)
    frame["is_fraud"] = (risk > np.quantile(risk, 0.97)).astype(np.int64)
    return frame


def step_train(state: DemoState) -> None:
    from sklearn.ensemble import RandomForestClassifier
    from xgboost import XGBClassifier

    data = fraud_dataset()
    state.train, state.test = data.iloc[:16_000], data.iloc[16_000:]
    X, y = state.train[FEATURES], state.train["is_fraud"]
    with state.console.status("Training a 100-tree random forest and a 100-tree XGBoost model…"):
        state.natives["forest"] = RandomForestClassifier(n_estimators=100, max_depth=8, n_jobs=1, random_state=0).fit(
            X, y
        )
        state.natives["xgboost"] = XGBClassifier(n_estimators=100, max_depth=6, n_jobs=1, random_state=0).fit(X, y)
    state.console.print(f"Trained on {len(X):,} transactions ({y.mean():.1%} fraud).")


def step_upload(state: DemoState) -> None:
    sample = state.train[FEATURES].head(500)
    for alias, key in [("champion", "forest"), ("challenger", "xgboost")]:
        with state.console.status(f"Uploading the {key} model (ONNX conversion and parity check)…"):
            state.versions[key] = state.client.upload_model(
                MODEL, state.natives[key], sample=sample, alias=alias, tags={"demo": "true", "algorithm": key}
            )
    table = Table("version", "alias", "framework", "serving runtime", "ONNX verdict", title="Registered")
    for mv in state.versions.values():
        table.add_row(mv.ref, ", ".join(mv.aliases), mv.framework, mv.runtime, mv.conversion["reason"])
    state.console.print(table)


def step_speedup(state: DemoState) -> None:
    X = state.test[FEATURES]
    table = Table("model", "batch", "native rows/s", "finalmile (ONNX) rows/s", "speed-up", title="Measured speed-up")
    for key, mv in state.versions.items():
        native, onnx = mv.load("native"), mv.load()
        for batch in (1, 1000):
            arrow = pa.Table.from_pandas(X.head(batch), preserve_index=False)
            slow = calls_per_second(partial(native.predict, arrow), 0.5) * batch
            fast = calls_per_second(partial(onnx.predict, arrow), 0.5) * batch
            table.add_row(key, str(batch), f"{slow:,.0f}", f"{fast:,.0f}", f"[bold green]{fast / slow:,.1f}×[/]")
    state.console.print(table)


def step_predict(state: DemoState) -> None:
    champion = state.client.model(f"{MODEL}@champion")
    rows = pd.concat([state.test[state.test.is_fraud == 1].head(3), state.test[state.test.is_fraud == 0].head(3)])
    result = champion.predict(rows[FEATURES])
    table = Table("amount", "actual", "predicted", "fraud score", title=f"{champion.ref} (champion) on held-out rows")
    for amount, actual, label, score in zip(rows.amount, rows.is_fraud, result.label, result.score, strict=True):
        table.add_row(f"{amount:,.2f}", "fraud" if actual else "ok", "fraud" if label else "ok", f"{score:.3f}")
    state.console.print(table)
    state.console.print("Next: [bold]finalmile models show fraud@champion[/] shows the schema and parity evidence.")


def step_deploy(state: DemoState) -> None:
    pipeline = (
        state.client.build_pipeline(MODEL)
        .add_split({"champion": (0.8, f"{MODEL}@champion"), "challenger": (0.2, f"{MODEL}@challenger")})
        .add_check("high_risk", "out.score > 0.9")
    )
    record = pipeline.deploy(max_batch_size=64, max_delay_ms=1)
    steps = record.spec["steps"][0]["variants"]
    pinned = ", ".join(f"{v['name']} → {v['steps'][0]['model']} ({v['weight']:.0%})" for v in steps)
    state.console.print(f"Deployed pipeline [bold]{MODEL}[/] version {record.version}: {pinned}; check high_risk.")


def step_serve(state: DemoState) -> None:
    import httpx

    from finalmile.http.server import running_server

    rows = state.test[FEATURES].head(200)
    token = demo_token(state.client.services)
    auth = {"authorization": f"Bearer {token}"}
    with running_server(state.client.services) as url, httpx.Client(base_url=url, headers=auth) as http:
        state.console.print(f"Serving on {url}: Open Inference Protocol V2 at /v2, records and Arrow at /pipelines.")
        state.console.print("Every request carries a viewer token (Authorization: Bearer fm_…), made for this demo.")
        body = {
            "inputs": [
                {"name": "input-0", "shape": [1, len(FEATURES)], "datatype": "FP64", "data": rows.iloc[0].tolist()}
            ]
        }
        v2 = http.post(f"/v2/models/{MODEL}/infer", json=body).json()
        score = next(o for o in v2["outputs"] if o["name"] == "score")["data"][0]
        state.console.print(
            f"V2 infer: score {score:.3f}, variant {v2['parameters']['variant'][0]}, "
            f"models {v2['parameters']['model_versions'][0]}"
        )
        variants: dict[str, int] = {}
        latencies = []
        for i in range(len(rows)):
            started = time.perf_counter()
            response = http.post(
                f"/pipelines/{MODEL}/infer",
                content=rows.iloc[[i]].to_json(orient="records"),
                headers={"content-type": "application/json"},
            )
            latencies.append((time.perf_counter() - started) * 1000)
            state.labels[response.headers["finalmile-request-id"]] = int(state.test.is_fraud.iloc[i])
            variant = response.headers["finalmile-variants"]
            variants[variant] = variants.get(variant, 0) + 1
        p50, p99 = np.percentile(latencies, [50, 99])
        split = ", ".join(f"{k} {v}" for k, v in sorted(variants.items()))
        state.console.print(f"{len(rows)} records requests: {split}; latency p50 {p50:.2f} ms, p99 {p99:.2f} ms")


def demo_token(services: Any) -> str:
    """A viewer token of the demo's own user, valid for a day: the server asks for one on every request."""
    from datetime import timedelta

    services.set_member("demo", "default", "viewer")
    return str(services.create_token("demo", "default", "viewer", "demo", timedelta(days=1))[1])


def step_query(state: DemoState) -> None:
    sql = (
        f"SELECT variant, model_versions, count(*) AS rows, round(avg(out_score), 4) AS mean_score, "
        f"sum(CAST(check_high_risk AS INTEGER)) AS flagged FROM logs WHERE pipeline = '{MODEL}' "
        "GROUP BY ALL ORDER BY rows DESC"
    )
    result = state.client.query(sql)
    table = Table(*result.columns, title="SQL over the inference log (DuckDB)")
    for row in result.itertuples(index=False):
        table.add_row(*(str(v) for v in row))
    state.console.print(f"[dim]{sql}[/]")
    state.console.print(table)


def step_ground_truth(state: DemoState) -> None:
    truth = pd.DataFrame({"request_id": list(state.labels), "is_fraud": list(state.labels.values())})
    receipt = state.client.pipeline(MODEL).add_ground_truth(truth)
    state.console.print(f"Ground truth arrived for {receipt.received} requests ({receipt.matched} found in the log).")
    result = state.client.query(
        "SELECT l.variant, count(*) AS rows, round(avg(CAST(l.out_label = g.is_fraud AS DOUBLE)), 4) AS accuracy, "
        "sum(g.is_fraud) AS frauds FROM logs l JOIN ground_truth g ON g.key = l.request_id "
        f"WHERE l.pipeline = '{MODEL}' GROUP BY ALL ORDER BY rows DESC"
    )
    table = Table(*result.columns, title="Accuracy per A/B variant, from the log joined to ground truth")
    for row in result.itertuples(index=False):
        table.add_row(*(str(v) for v in row))
    state.console.print(table)


def step_replay(state: DemoState) -> None:
    """Before the challenger gets more traffic: what it would have answered on everything the champion served."""
    replayed = state.client.pipeline(MODEL).replay(f"{MODEL}@challenger", segment_by="variant")
    s = replayed.summary
    quality = s.get("quality") or {}
    state.console.print(
        f"Replayed {replayed.rows:,} logged rows through {replayed.candidate}: the same decision on "
        f"{s['agreement']:.1%} of them, score PSI {s['psi']:.3f} against what was served, mean score difference "
        f"{s['difference']['mean']:+.4f}"
        + (
            f"; accuracy on labelled rows {quality['served']:.3f} served vs {quality['candidate']:.3f}."
            if quality
            else "."
        )
    )
    state.console.print(f"Drill down: [bold]finalmile replays rows {replayed.id}[/] or the dashboard's replay page.")


def step_dashboard(state: DemoState) -> None:
    """Hand a newcomer the dashboard: the command that serves it, its URL, and an editor's login token."""
    from datetime import timedelta

    services = state.client.services
    services.set_member("newcomer", "default", "editor")
    _, token = services.create_token("newcomer", "default", "editor", "dashboard login (demo)", timedelta(days=1))
    state.console.print("Everything above, in a browser for the people who do not code. Start the server:")
    state.console.print("    [bold].venv/bin/finalmile serve[/]")
    state.console.print("then open [bold]http://127.0.0.1:8080/ui[/] and log in with this editor token (valid 1 day):")
    state.console.print(f"    [bold]{token}[/]", soft_wrap=True)


STEPS: list[tuple[str, Callable[[DemoState], None]]] = [
    ("Train", step_train),
    ("Register and convert", step_upload),
    ("Speed-up", step_speedup),
    ("Predict", step_predict),
    ("Deploy a pipeline (A/B split and a check)", step_deploy),
    ("Serve over HTTP", step_serve),
    ("Query the inference log", step_query),
    ("Join late ground truth", step_ground_truth),
    ("Replay the challenger on real traffic", step_replay),
    ("Monitor the challenger", step_monitor),
    ("Traffic drifts", step_traffic),
    ("Monitors alert and act", step_act),
    ("What happened, as a chart", step_chart),
    ("Quality before the labels", step_estimate),
    ("Why a row was scored so", step_explain),
    ("Roll out a better model, step by step", step_rollout),
    ("A candidate whose scores shift is rolled back", step_bad_rollout),
    ("Open the dashboard", step_dashboard),
]


def run_demo(client: LocalClient, console: Console) -> DemoState:
    state = DemoState(client, console)
    for i, (title, step) in enumerate(STEPS, 1):
        console.rule(f"[bold]{i}. {title}")
        step(state)
    return state
