"""Every declared verb, embedded and against a live server with a token: the same calls, the same results, the
same error classes. The walk records each verb it calls, and fails unless it has called every one of `VERBS`."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from cryptography.fernet import Fernet
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from finalmile.backends.config import DeploymentConfig
from finalmile.errors import (
    FinalmileError,
    ModelNotFound,
    NotReadyError,
    PipelineNotFound,
    QueryError,
    VersionPinnedError,
)
from finalmile.pipelines.spec import PipelineSpec
from finalmile.verbs import VERBS
from tests.fixtures import tabular
from tests.integration.conftest import require_broker

X, y = tabular(200)
JOB = "def main(ctx):\n    print('rows', ctx.client.query('SELECT 1 AS one').one[0])\n"


class Recorded:
    """A client whose verbs are counted as they are called."""

    def __init__(self, client: Any, called: set[str]) -> None:
        self.client = client
        self.called = called

    def __getattr__(self, name: str) -> Any:
        if name in VERBS:
            self.called.add(name)
        return getattr(self.client, name)


def walk(c: Any, p: str, tmp: Path) -> dict[str, Any]:
    """Every verb once (most of them on names prefixed `p`, so two walks share a store); what the two walks
    should agree on is returned."""
    seen: dict[str, Any] = {}
    seen["whoami"] = c.whoami()["role"]

    # models
    first = c.upload_model(f"{p}m", LogisticRegression().fit(X, y), sample=X.head(20))
    c.upload_model(f"{p}m", LogisticRegression(C=0.5).fit(X, y), sample=X.head(20))
    seen["upload_model"] = (first.version, first.runtime, type(first.record).__name__)
    seen["models"] = [(m.versions, m.latest) for m in c.models() if m.name == f"{p}m"]
    seen["model"] = c.model(f"{p}m:1").ref.removeprefix(p)
    seen["model_versions"] = [v.version for v in c.model_versions(f"{p}m")]
    seen["set_alias"] = c.set_alias(f"{p}m", 2, "champion").aliases
    c.delete_alias(f"{p}m", "champion")
    seen["delete_alias"] = c.model(f"{p}m:2").aliases
    with pytest.raises(ModelNotFound):
        c.model(f"{p}nope:9")

    # pipelines
    name = f"{p}pipe"
    draft = c.build_pipeline(name).add_model_step(f"{p}m:1")
    version = c.create_pipeline_version(PipelineSpec(name=name, steps=draft.steps).model_dump(mode="json"))
    seen["create_pipeline_version"] = version.version
    split = {"variants": [{"name": "a", "weight": 1, "steps": [{"model": f"{p}m:1"}]}]}
    split["variants"].append({"name": "b", "weight": 1, "steps": [{"model": f"{p}m:2"}]})  # type: ignore[attr-defined]
    applied = c.apply_pipeline({"name": name, "steps": [{"kind": "split", **split}]})
    seen["apply_pipeline"] = applied.name.removeprefix(p)
    seen["pipeline"] = len(c.pipeline(name).steps)
    seen["pipelines"] = [n.removeprefix(p) for n in c.pipelines() if n.startswith(p)]
    seen["pipeline_versions"] = [v.version for v in c.pipeline_versions(name)]
    with pytest.raises(PipelineNotFound):
        c.pipeline(f"{p}nope")
    with pytest.raises(VersionPinnedError):
        c.delete_model_version(f"{p}m", 2)  # pinned by version 2 of the pipeline
    spare = c.upload_model(f"{p}m", LogisticRegression(C=0.1).fit(X, y), sample=X.head(20))
    c.delete_model_version(f"{p}m", spare.version)
    seen["delete_model_version"] = [v.version for v in c.model_versions(f"{p}m")]

    seen["deploy_pipeline"] = c.deploy_pipeline(name, 2, DeploymentConfig(max_batch_size=16)).version
    deployed = [d for d in c.deployments() if d["name"] == name]
    seen["deployments"] = [(d["version"], d["active"], type(d["updated_at"]).__name__) for d in deployed]
    table = pa.Table.from_pandas(X.head(5), preserve_index=False)
    result = _eventually(lambda: c.infer_pipeline(name, table))
    seen["infer_pipeline"] = (result.table.num_rows, result.metadata()["pipeline_version"])
    X.head(30).to_csv(tmp / f"{p}rows.csv", index=False)
    scored = c.infer_file(name, tmp / f"{p}rows.csv", tmp / f"{p}scored.parquet", batch_size=10, progress=False)
    seen["infer_file"] = scored.rows
    seen["route_pipeline"] = "variant 'b' (version 3)" in c.route_pipeline(name, "b")
    seen["rollback_pipeline"] = c.rollback_pipeline(name).endswith("from version 3 to 2")

    # the inference log
    _eventually(lambda: _at_least(c.query(f"SELECT count(*) AS n FROM logs WHERE pipeline = '{name}'").n[0], 5))
    logged = c.pipeline_logs(name, limit=3, columns=["request_id", "pipeline_version"])
    seen["pipeline_logs"] = (logged.num_rows, logged.column_names)
    seen["query"] = list(c.query("SELECT 1 AS one").columns)
    with pytest.raises(QueryError):
        c.query("DROP TABLE logs")
    seen["export_logs"] = c.export_logs(name, tmp / f"{p}export.csv") >= 5
    ids = list(logged.column("request_id").to_pylist())
    receipt = c.add_ground_truth(name, pd.DataFrame({"request_id": ids, "label": [1] * len(ids)}))
    seen["add_ground_truth"] = (receipt.received, receipt.matched)
    seen["log_health"] = c.log_health()["healthy"]
    seen["save_query"] = c.save_query(f"{p}q", "SELECT count(*) AS n FROM logs").sql
    seen["saved_queries"] = [q.name.removeprefix(p) for q in c.saved_queries() if q.name.startswith(p)]
    c.delete_query(f"{p}q")

    # explanations (a logistic regression: permutation SHAP, adding up to its score)
    why = c.explain_model(f"{p}m:1", X.head(2))
    seen["explain_model"] = (list(why.columns[-2:]), len(why), bool(abs(why.value - why[list(X.columns)].sum(axis=1)
                                                                      - why.base_value).max() < 1e-6))  # fmt: skip
    explained = c.explain(name, ids[0])
    seen["explain"] = (sorted(set(explained.model.str.removeprefix(p).str[:2])), list(explained.columns[-2:]))
    seen["importance"] = sorted(set(c.importance(name, window="1h", rows=3).feature))
    with pytest.raises(FinalmileError, match="no request") as refused:
        c.explain(name, "nope")
    seen["explain refused"] = refused.value.status_code

    # an edge bundle (written by the server and unpacked here, for the remote client)
    bundled = c.bundle_pipeline(name, tmp / f"{p}bundle", wheels=False)
    files = sorted(f.name for f in Path(bundled["output"]).iterdir())
    seen["bundle_pipeline"] = (bundled["version"], [m.removeprefix(p) for m in bundled["models"]], files)

    # replays
    replayed = c.replay(name, f"{p}m:1", sample=1.0)
    seen["replay"] = (replayed.status, replayed.candidate.removeprefix(p), replayed.rows >= 5)
    seen["replays"] = [r.status for r in c.replays(name)]
    seen["replay_run"] = c.replay_run(replayed.id).summary["agreement"]
    seen["replay_rows"] = c.replay_rows(replayed.id, limit=2).num_rows
    with pytest.raises(FinalmileError, match="sample") as refused:
        c.replay(name, f"{p}m:1", sample=2.0)
    seen["replay refused"] = (refused.value.status_code // 100, len(c.replays(name)))

    # rollouts (on version 1: a rollout splits a pipeline that serves no split of its own)
    c.deploy_pipeline(name, 1, DeploymentConfig(max_batch_size=16))
    started = c.rollout(name, f"{p}m:2", steps=[10, 100], step_every="1h", min_rows=5)
    seen["rollout"] = (started.state, started.weight, started.candidate.removeprefix(p), started.settled)
    seen["rollouts"] = [r.state for r in c.rollouts(name)]
    seen["run_rollouts"] = c.run_rollouts()  # not due for an hour
    seen["control_rollout"] = c.control_rollout(started.id, "pause").state
    with pytest.raises(FinalmileError, match="cannot pause") as refused:
        c.control_rollout(started.id, "pause")
    seen["rollout refused"] = refused.value.status_code
    c.control_rollout(started.id, "abort")
    seen["rollout_run"] = [(e.decision, e.weight) for e in c.rollout_run(started.id).events]

    # monitors, alerts, audit
    assay = c.build_assay(f"{p}drift", name, "x0", baseline=X, window="1h").save()
    seen["build_assay"] = assay.config.column
    slow = {"name": f"{p}slow", "pipeline": name, "kind": "latency_p99", "window": "1h", "alert": 0.000001}
    seen["save_monitor"] = c.save_monitor(slow, datetime.now(UTC) - timedelta(hours=1)).config.kind
    built = c.build_monitor(f"{p}errors", name, "error_rate", window="1h", alert=0.5).save()
    seen["build_monitor"] = built.config.metric
    # the kinds whose baseline is a frame of several columns: sent as records by the remote client
    together = c.build_monitor(f"{p}mv", name, "multivariate_drift", columns=["x0", "x1"], baseline=X, window="1h")
    estimated = c.build_monitor(f"{p}est", name, "estimated_performance", metric="accuracy",
                                reference=X.assign(label=y), window="1h")  # fmt: skip
    seen["several columns"] = (together.save().config.columns, estimated.save().config.baseline.kind)
    seen["monitor"] = c.monitor(f"{p}slow").config.alert
    seen["monitors"] = sorted(m.name.removeprefix(p) for m in c.monitors(name))
    c.run_monitors()
    seen["run_monitors"] = len(c.monitor_results(f"{p}slow"))
    seen["monitor_results"] = list(c.monitor_results(f"{p}slow").status)
    seen["preview_monitor"] = len(c.preview_monitor(f"{p}slow", datetime.now(UTC) - timedelta(hours=2))) >= 1
    raised = c.alerts(f"{p}slow")
    seen["alerts"] = list(raised.level)
    seen["acknowledge_alert"] = c.acknowledge_alert(int(raised.alert_id.iloc[0])).acknowledged_by is not None
    c.delete_monitor(f"{p}errors")
    seen["delete_monitor"] = sorted(m.name.removeprefix(p) for m in c.monitors(name))
    trail = c.audit(f"pipeline {name}")
    seen["audit"] = list(trail.action)

    # streams
    source, sink = {"broker": "nats", "subject": f"{p}in"}, {"broker": "nats", "subject": f"{p}out"}
    seen["build_stream"] = c.build_stream(f"{p}s", name, source, sink, batch_size=10)["name"].removeprefix(p)
    seen["streams"] = [s["name"].removeprefix(p) for s in c.streams() if s["name"].startswith(p)]
    seen["pause_stream"] = c.pause_stream(f"{p}s")["paused"]
    seen["resume_stream"] = c.resume_stream(f"{p}s")["paused"]
    seen["stream"] = c.stream(f"{p}s")["config"]["batch_size"]
    c.delete_stream(f"{p}s")

    # jobs and connections
    (tmp / f"{p}job.py").write_text(JOB)
    seen["upload_job"] = c.upload_job(f"{p}job", tmp / f"{p}job.py").kind
    seen["schedule_job"] = c.schedule_job(f"{p}job", "0 2 * * *", timeout_s=60).cron
    seen["job"] = c.job(f"{p}job").timeout_s
    seen["jobs"] = [j.name.removeprefix(p) for j in c.jobs() if j.name.startswith(p)]
    run = c.run_job(f"{p}job")
    seen["run_job"] = (run.status, "rows 1" in run.log)
    seen["job_run"] = c.job_run(f"{p}job", run.id).status
    seen["job_runs"] = [r.status for r in c.job_runs(f"{p}job")]
    c.delete_job(f"{p}job")
    connection = c.create_connection(f"{p}c", "postgres", "postgresql://u:secret@127.0.0.1/db")
    seen["create_connection"] = connection.url
    seen["connections"] = [x.name.removeprefix(p) for x in c.connections() if x.name.startswith(p)]
    c.delete_connection(f"{p}c")

    # access: the client's workspace
    seen["set_member"] = c.set_member(f"{p}rita", "editor").role
    seen["members"] = [m.role for m in c.members() if m.user == f"{p}rita"]
    token = c.create_token("viewer", name=f"{p}t", user=f"{p}rita")
    seen["create_token"] = (token["role"], token["token"].startswith("fm_"))
    seen["tokens"] = [t.role for t in c.tokens() if t.name == f"{p}t"]
    seen["revoke_token"] = c.revoke_token(token["id"]).revoked_at is not None
    c.remove_member(f"{p}rita")

    c.undeploy_pipeline(name)
    with pytest.raises(NotReadyError):
        c.infer_pipeline(name, table)
    seen["undeploy_pipeline"] = [d["active"] for d in c.deployments() if d["name"] == name]
    return seen


def _eventually(fn: Any, timeout: float = 20.0) -> Any:
    """A server converges on a deployment within a second or two; its log rows become queryable soon after."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (AssertionError, NotReadyError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _at_least(value: int, wanted: int) -> None:
    assert value >= wanted, value


def test_every_verb_embedded_and_remote_with_a_token(
    tmp_path: Path, server_factory, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    require_broker("nats")
    home, key = tmp_path / "home", Fernet.generate_key().decode()
    monkeypatch.setenv("FINALMILE_SECRET_KEY", key)
    monkeypatch.setenv("FINALMILE_SANDBOX", "auto")
    with Client(home=home) as setup:
        token = setup.services.init_access()[1]
    server = server_factory(home, env={"FINALMILE_SECRET_KEY": key, "FINALMILE_MONITOR_POLL_S": "3600"}, auth=True)

    embedded_calls: set[str] = set()
    with Client(home=home) as local:
        embedded = walk(Recorded(local, embedded_calls), "e", tmp_path)
    remote_calls: set[str] = set()
    with Client(url=server.url, token=token) as remote:
        assert isinstance(remote, Client)
        remote_seen = walk(Recorded(remote, remote_calls), "r", tmp_path)

    assert embedded_calls == set(VERBS), sorted(set(VERBS) - embedded_calls)
    assert remote_calls == set(VERBS), sorted(set(VERBS) - remote_calls)
    assert set(remote_seen) == set(embedded)
    differ = {k: (embedded[k], remote_seen[k]) for k in embedded if embedded[k] != remote_seen[k]}
    assert not differ, differ
