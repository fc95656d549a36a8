"""Monitors over a log whose every row the test wrote: each score is checked against a value computed by hand."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from finalmile.errors import InvalidInputError, NotFoundError
from finalmile.monitoring import drift
from tests.fixtures import tabular

X, y = tabular(400)
T0 = datetime(2026, 11, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def logged(client: Client) -> Client:
    """Pipeline `p` (A/B: a = m:1, b = m:1) and three hours of log rows written directly, out of time order:
    hour 0 — 100 rows like the baseline; hour 1 — 100 rows shifted by +2; hour 2 — nothing."""
    client.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(50))
    client.build_pipeline("p").add_split({"a": (0.5, "m:1"), "b": (0.5, "m:1")}).add_check(
        "high", "out.score > 0.9"
    ).deploy()
    rng = np.random.default_rng(3)
    frames = []
    for hour, shift in ((0, 0.0), (1, 2.0)):
        n = 100
        times = [T0 + hour * HOUR + timedelta(seconds=30 * i) for i in range(n)]
        frames.append(
            pd.DataFrame(
                {
                    "time": times,
                    "request_id": [f"r{hour}-{i}" for i in range(n)],
                    "row": np.zeros(n, dtype=np.int32),
                    "pipeline_version": np.ones(n, dtype=np.int32),
                    "variant": ["a" if i % 4 else "b" for i in range(n)],
                    "model_versions": ["m:1"] * n,
                    "latency_ms": np.arange(1, n + 1, dtype=np.float64) * (hour + 1),
                    "status": ["error" if i % 10 == 0 and hour == 1 else "ok" for i in range(n)],
                    "in_x0": rng.standard_normal(n) + shift,
                    "out_score": rng.random(n),
                    "out_label": (np.arange(n) % 2).astype(np.int64),
                    "check_high": [i % 5 == 0 for i in range(n)],
                }
            )
        )
    log = pd.concat(frames, ignore_index=True)
    directory = client.settings.home / "logs" / "pipeline=p" / "date=2026-11-01"
    directory.mkdir(parents=True)
    table = pa.Table.from_pandas(log, preserve_index=False)
    table = table.set_column(0, "time", table.column("time").cast(pa.timestamp("us", tz="UTC")))
    # the later hour in the first part, its rows shuffled: the log is read in its own order, and the windows put it
    # in time order
    later = np.random.default_rng(0).permutation(np.arange(100, 200))
    pq.write_table(table.take(later), directory / "part-0.parquet")
    pq.write_table(table.slice(0, 100), directory / "part-1.parquet")
    client._test_log = log  # type: ignore[attr-defined]
    return client


def test_a_psi_assay_previews_history_against_a_frame_baseline(logged: Client) -> None:
    log = logged._test_log  # type: ignore[attr-defined]
    baseline = X.x0.to_numpy()
    assay = logged.build_assay("drift", "p", "in_x0", baseline=X, window="1h", metric="psi", warning=0.1, alert=0.25)
    result = assay.preview(T0, T0 + 3 * HOUR)
    assert list(result.rows) == [100, 90, 0]  # error rows have no inputs to judge
    assert list(result.status) == ["ok", "alert", "no data"] and math.isnan(result.score[2])
    edges = drift.bin_edges(baseline)
    p = drift.shares(drift.histogram(baseline, edges))
    for hour in (0, 1):
        rows = log.iloc[100 * hour : 100 * (hour + 1)]
        window = rows.in_x0[rows.status == "ok"].to_numpy()
        expected = drift.psi(p, drift.shares(drift.histogram(window, edges)))
        assert result.score[hour] == pytest.approx(expected, abs=1e-12)
    evidence = result.evidence[1]
    assert evidence["edges"] == pytest.approx(list(edges)) and evidence["baseline_shares"] == pytest.approx(list(p))
    assert (evidence["metric"], evidence["warning"], evidence["alert"]) == ("psi", 0.1, 0.25)


def test_other_baselines_metrics_and_groups(logged: Client) -> None:
    log = logged._test_log  # type: ignore[attr-defined]
    first = log.in_x0[:100].to_numpy()
    from_log = logged.build_assay("w", "p", "in_x0", baseline=(T0, T0 + HOUR), window="1h", metric="wasserstein")
    scores = from_log.preview(T0, T0 + 2 * HOUR).score
    assert scores[0] == pytest.approx(0.0, abs=1e-12)
    second = log.in_x0[100:200][log.status[100:200] == "ok"].to_numpy()
    assert scores[1] == pytest.approx(drift.wasserstein(first, second), abs=1e-12)
    sample = logged.build_assay("ks", "p", "in_x0", baseline="m:1", window="1h", metric="ks_pvalue", alert=0.01)
    result = sample.preview(T0 + HOUR, T0 + 2 * HOUR)
    assert result.score[0] == pytest.approx(drift.ks(X.x0.head(50).to_numpy(), second)[1])
    assert result.status[0] == "alert"  # p-values: lower is worse
    grouped = logged.build_assay("g", "p", "in_x0", baseline=X, window="2h", interval="1h", group_by="variant")
    by_group = grouped.preview(T0 + HOUR, T0 + 2 * HOUR)
    assert list(by_group.group) == ["variant=a", "variant=b"] and list(by_group.rows) == [145, 45]
    only_b = logged.build_assay("b", "p", "in_x0", baseline=X, window="2h", interval="1h", variant="b")
    assert list(only_b.preview(T0 + HOUR, T0 + 2 * HOUR).rows) == [45]


def test_check_rate_error_rate_latency_and_performance(logged: Client) -> None:
    log = logged._test_log  # type: ignore[attr-defined]
    rate = logged.build_monitor("rate", "p", "check_rate", column="high", window="1h", warning=0.1, alert=0.5)
    result = rate.preview(T0, T0 + HOUR)
    assert (result.score[0], result.status[0]) == (pytest.approx(0.2), "warning")  # every fifth row
    errors = logged.build_monitor("errors", "p", "error_rate", window="1h", alert=0.05).preview(T0, T0 + 2 * HOUR)
    assert list(errors.score) == [0.0, pytest.approx(0.1)] and list(errors.status) == ["ok", "alert"]
    latency = logged.build_monitor("p99", "p", "latency_p99", window="1h").preview(T0 + HOUR, T0 + 2 * HOUR)
    assert latency.score[0] == pytest.approx(np.percentile(np.arange(1, 101) * 2.0, 99))
    truth = pd.DataFrame({"request_id": log.request_id[:100], "label": (np.arange(100) % 3 == 0).astype(int)})
    logged.pipeline("p").add_ground_truth(truth)
    labels, predicted, scores = truth.label.to_numpy(), log.out_label[:100].to_numpy(), log.out_score[:100].to_numpy()
    tp = int(((labels == 1) & (predicted == 1)).sum())
    expected = {
        "accuracy": float((labels == predicted).mean()),
        "precision": tp / int((predicted == 1).sum()),
        "recall": tp / int((labels == 1).sum()),
        "f1": 2 * tp / (int((predicted == 1).sum()) + int((labels == 1).sum())),
        "log_loss": float(-np.mean(labels * np.log(scores) + (1 - labels) * np.log(1 - scores))),
    }
    pairs = [(s, t) for s in scores[labels == 1] for t in scores[labels == 0]]
    expected["roc_auc"] = sum(1.0 if s > t else 0.5 if s == t else 0.0 for s, t in pairs) / len(pairs)
    for metric, value in expected.items():
        monitor = logged.build_monitor(f"perf-{metric}", "p", "performance", metric=metric, window="1h")
        assert monitor.preview(T0, T0 + HOUR).score[0] == pytest.approx(value, abs=1e-9), metric
    per_variant = logged.build_monitor("acc", "p", "performance", metric="accuracy", window="1h", group_by="variant")
    result = per_variant.preview(T0, T0 + HOUR)
    is_a = (log.variant[:100] == "a").to_numpy()
    assert list(result.group) == ["variant=a", "variant=b"]
    assert result.score[0] == pytest.approx(float((labels == predicted)[is_a].mean()))
    assert (
        logged.build_monitor("acc2", "p", "performance", metric="accuracy", window="1h")
        .preview(T0 + HOUR, T0 + 2 * HOUR)
        .status[0]
        == "no data"
    )  # no labels yet for the second hour


def test_regression_metrics_against_ground_truth(client: Client) -> None:
    from sklearn.linear_model import LinearRegression

    target = X.x0 * 2 + 1
    client.upload_model("r", LinearRegression().fit(X, target), sample=X.head(20))
    pipeline = client.build_pipeline("reg").add_model_step("r:1")
    pipeline.deploy()
    start = datetime.now(UTC) - timedelta(seconds=1)
    ids = [pipeline.infer_with_metadata(X.iloc[[i]]).request_id for i in range(20)]
    predicted = client.model("r:1").predict(X.head(20)).prediction.to_numpy()
    truth = predicted + np.linspace(-1, 1, 20)
    pipeline.add_ground_truth(pd.DataFrame({"request_id": ids, "label": truth}))
    residual = truth - predicted
    for metric, value in {
        "rmse": math.sqrt(float(np.mean(residual**2))),
        "mae": float(np.mean(np.abs(residual))),
        "r2": 1 - float(np.sum(residual**2) / np.sum((truth - truth.mean()) ** 2)),
    }.items():
        monitor = client.build_monitor(f"m-{metric}", "reg", "performance", metric=metric, window="1h")
        assert monitor.preview(start, start + timedelta(hours=1)).score[0] == pytest.approx(value, abs=1e-9)


def test_mistakes_are_refused_when_the_monitor_is_built(logged: Client) -> None:
    def refused(match: str, **kwargs: object) -> None:
        arguments = {"name": "a", "pipeline": "p", "column": "in_x0", "baseline": X, "window": "1h"} | kwargs
        with pytest.raises(InvalidInputError, match=match):
            logged.build_assay(**arguments)  # type: ignore[arg-type]

    refused("does not log column 'in_nope'", column="in_nope")
    refused("shorter than its interval", window="1h", interval="2h")
    refused("warning threshold .* before the alert", warning=0.5, alert=0.2)
    refused("warning threshold .* before the alert", metric="ks_pvalue", warning=0.01, alert=0.05)
    refused("no rows", baseline=X.head(0))
    refused("no rows of 'in_x0'", baseline=(T0 - 10 * HOUR, T0 - 9 * HOUR))
    refused("unknown drift metric", metric="entropy")
    refused("expected a number and a unit", window="soon")
    with pytest.raises(InvalidInputError, match="does not log check 'nope'"):
        logged.build_monitor("c", "p", "check_rate", column="nope")
    with pytest.raises(NotFoundError):
        logged.build_assay("x", "nope", "in_x0", baseline=X)


def test_saved_monitors_run_store_results_and_alert(logged: Client, tmp_path: Path) -> None:
    assay = logged.build_assay("drift", "p", "in_x0", baseline=X, window="1h", warning=0.1, alert=0.25)
    assay.save(start=T0)
    assert [m.name for m in logged.monitors()] == ["drift"]
    stored = assay.run(now=T0 + 2 * HOUR + timedelta(minutes=5))
    assert [r.status for r in stored] == ["ok", "alert"]
    assert assay.run(now=T0 + 2 * HOUR + timedelta(minutes=6)) == []  # nothing new has ended
    results = logged.monitor("drift").results()
    assert list(results.status) == ["ok", "alert"] and list(results.rows) == [100, 90]
    alerts = logged.alerts()
    assert len(alerts) == 1 and alerts.level[0] == "alert" and alerts.value[0] == pytest.approx(results.score[1])
    chart = assay.chart(tmp_path / "drift.png", window=1)
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000
    with pytest.raises(InvalidInputError, match="out of range"):
        assay.chart(tmp_path / "x.png", window=5)


def test_actions_route_roll_back_and_respect_cooldowns(logged: Client) -> None:
    served = lambda: logged.services.pipelines.deployments()[0].version  # noqa: E731
    assert served() == 1
    closed = "http://127.0.0.1:9/hook"  # nothing listens there: the webhook fails, the route still happens
    monitor = logged.build_monitor(
        "errors",
        "p",
        "error_rate",
        window="1h",
        alert=0.05,
        actions=[{"kind": "webhook", "url": closed, "retries": 1}, {"kind": "route", "variant": "a"}],
    )
    monitor.save(start=T0)
    monitor.run(now=T0 + 2 * HOUR)
    assert served() == 2
    spec = logged.services.pipelines.get_version("p", 2).spec
    assert {v["name"]: v["weight"] for v in spec["steps"][0]["variants"]} == {"a": 1.0, "b": 0.0}
    assert logged.services.local.get("p").current.version == 2  # the live deployment, not only the record
    actions = monitor.actions().set_index("action")
    assert actions.outcome["route"] == "done" and actions.outcome["webhook"] == "failed"
    assert "failed after 2 attempts" in actions.detail["webhook"]
    rollback = logged.build_monitor("rb", "p", "error_rate", window="1h", alert=0.05, actions=[{"kind": "rollback"}])
    rollback.save(start=T0)
    rollback.run(now=T0 + 2 * HOUR)
    assert served() == 1 and "from version 2 to 1" in rollback.actions().detail[0]
    again = logged.build_monitor(
        "again", "p", "error_rate", window="1h", alert=0.05, actions=[{"kind": "undeploy", "cooldown_s": 3600}]
    )
    again.save(start=T0)
    again.run(now=T0 + HOUR)  # hour 0 has no errors: no alert, nothing done
    assert again.actions().empty
    again.run(now=T0 + 2 * HOUR)
    assert logged.services.pipelines.deployments() == []
    logged.build_pipeline("p").add_model_step("m:1").deploy()
    monitors = logged.services.monitors
    monitors.record(monitors.get("again"), [], T0 + HOUR, set())  # rewind: compute hour 1 again
    logged.monitor("again").run(now=T0 + 2 * HOUR)
    assert list(again.actions().outcome) == ["done", "cooldown"] and len(logged.services.pipelines.deployments()) == 1


def test_cli_apply_list_preview_run_results_chart_alerts(
    logged: Client, cli_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.unit.cli.test_cli import run

    monkeypatch.setenv("FINALMILE_HOME", str(logged.settings.home))
    monkeypatch.setenv("FINALMILE_DATABASE_URL", logged.settings.resolved_database_url())
    X.to_csv(cli_env / "train.csv", index=False)
    (cli_env / "assay.yaml").write_text(
        "name: amount-drift\npipeline: p\ncolumn: in_x0\nbaseline: {file: train.csv}\n"
        "window: 1h\nwarning: 0.1\nalert: 0.25\n".replace("train.csv", str(cli_env / "train.csv"))
    )
    days = (datetime.now(UTC) - T0).days + 1
    code, out, err = run(capsys, "assays", "apply", str(cli_env / "assay.yaml"), "--start", f"{days}d")
    assert code == 0 and "saved monitor amount-drift" in out, err
    code, out, _ = run(capsys, "assays", "preview", "amount-drift", "--since", f"{days}d")
    assert code == 0 and "alert" in out and "no data" in out
    code, out, _ = run(capsys, "assays", "run")
    assert code == 0 and "stored" in out
    code, out, _ = run(capsys, "assays", "list")
    assert code == 0 and "amount" in out and "psi" in out
    code, out, _ = run(capsys, "assays", "results", "amount-drift")
    assert code == 0 and out.count("alert") >= 1
    code, out, _ = run(capsys, "alerts")
    assert code == 0 and "amount" in out and "alert" in out
    windows = len(logged.monitor("amount-drift").results())
    alert_index = list(logged.monitor("amount-drift").results().status).index("alert")
    code, out, _ = run(
        capsys, "assays", "chart", "amount-drift", "-o", str(cli_env / "c.png"), "--window", str(alert_index)
    )
    assert code == 0 and (cli_env / "c.png").stat().st_size > 10_000 and windows > 2
    code, _, err = run(capsys, "assays", "results", "nope")
    assert code == 1 and "not found" in err and "Traceback" not in err
    (cli_env / "bad.yaml").write_text("name: w\npipeline: p\ncolumn: in_x0\nbaseline: {file: x.csv}\nwindow: 1h\n")
    code, _, err = run(capsys, "assays", "apply", str(cli_env / "bad.yaml"))
    assert code == 1 and "no such file" in err
