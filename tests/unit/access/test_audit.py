"""The audit trail: every state change with who, when, what, before and after — in the SDK, SQL, REST and CLI."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from tests.fixtures import ErrorModel, tabular
from tests.unit.cli.test_cli import run

X, y = tabular(100)


def test_every_state_change_is_recorded_with_before_and_after(client: Client) -> None:
    client.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(10), alias="champion")
    client.upload_model("m", LogisticRegression(C=0.01).fit(X, y), sample=X.head(10))
    client.set_alias("m", 2, "champion")
    p = client.build_pipeline("fraud").add_model_step("m:1")
    p.deploy()
    p.clear().add_model_step("m:2").deploy()
    p.undeploy()
    trail = client.audit()
    assert list(trail.action) == ["upload", "upload", "alias", "version", "deploy", "version", "deploy", "undeploy"]
    assert trail.after.iloc[0] == "m:1 (alias champion)"
    assert (trail.before.iloc[2], trail.after.iloc[2]) == ("m:1", "m:2")  # the alias moved from 1 to 2
    entries = client.services.audit.entries()
    assert [(e.before, e.after) for e in entries if e.action == "deploy"] == [(None, "1"), ("1", "2")]
    assert (entries[-1].before, entries[-1].after) == ("2", None)
    assert set(trail.actor) == {client.services.user}
    assert (datetime.now(UTC) - trail["at"].max().to_pydatetime()) < timedelta(minutes=1)
    in_sql = client.query("SELECT action, count(*) AS n FROM audit GROUP BY action ORDER BY action")
    counts = dict(zip(in_sql.action, in_sql.n, strict=True))
    assert counts == {"alias": 1, "deploy": 2, "undeploy": 1, "upload": 2, "version": 2}
    assert list(client.audit("pipeline fraud").action) == ["version", "deploy", "version", "deploy", "undeploy"]


def test_a_monitors_rollback_names_the_monitor(sqlite_client: Client) -> None:
    client = sqlite_client
    client.upload_model("good", LogisticRegression().fit(X, y), sample=X.head(10))
    client.upload_model("bad", ErrorModel)
    p = client.build_pipeline("p").add_model_step("good:1")
    p.deploy()
    p.clear().add_model_step("bad:1").deploy()
    start = datetime.now(UTC) - timedelta(hours=2)
    for _ in range(3):
        try:
            p.infer(X.head(1))
        except Exception:
            pass
    client.build_monitor("errors", "p", "error_rate", window="1h", alert=0.5, actions=[{"kind": "rollback"}]).save(
        start
    )
    client.run_monitors(now=datetime.now(UTC) + timedelta(hours=1))
    last = client.audit("pipeline p").iloc[-1]
    assert (last.actor, last.action, last.before, last.after) == ("monitor errors", "rollback", "2", "1")


def test_the_cli_and_the_api_show_the_trail(cli_env, capsys) -> None:  # type: ignore[no-untyped-def]
    with Client() as client:
        client.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(10))
        client.build_pipeline("fraud").add_model_step("m:1").deploy()
    code, out, _ = run(capsys, "audit")
    assert code == 0 and "upload" in out and "pipeline fraud" in out
    code, out, _ = run(capsys, "audit", "--target", "model m")
    assert code == 0 and "pipeline fraud" not in out
    import httpx

    from finalmile.http.server import running_server

    with Client() as client, running_server(client.services, auth=False) as url:
        entries = httpx.get(f"{url}/api/v1/audit", params={"target": "pipeline"}).json()
        assert [e["action"] for e in entries] == ["version", "deploy"] and entries[1]["after"] == "1"
        refused = httpx.get(f"{url}/api/v1/audit", params={"limit": 0})
        assert refused.status_code == 422 and "limit" in refused.json()["error"]
    assert isinstance(pd.Timestamp(entries[0]["at"]), pd.Timestamp)
