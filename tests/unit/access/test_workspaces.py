"""Workspaces keep models, pipelines, logs, monitors and the audit trail apart (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from finalmile.errors import NotFoundError, PipelineNotFound
from tests.fixtures import tabular


def test_what_one_workspace_stores_is_invisible_from_another(client: Client, home, database_url: str) -> None:  # type: ignore[no-untyped-def]
    X, y = tabular(80)
    client.services.create_workspace("risk")
    with Client(home=home, database_url=database_url, workspace="risk") as risk:
        assert risk.services.workspace == "risk" and risk.services.settings.home == (home / "workspaces" / "risk")
        mv = risk.upload_model("fraud", LogisticRegression().fit(X, y), sample=X.head(20), alias="champion")
        risk.build_pipeline("scoring").add_model_step("fraud@champion").deploy()
        risk.pipeline("scoring").infer(X.head(5))
        risk.build_assay("drift", "scoring", "in_x0", baseline=X, window="1h")
        assert mv.version == 1 and risk.query("SELECT count(*) AS n FROM logs")["n"][0] == 5
        assert [e.action for e in risk.services.audit.entries()][:2] == ["upload", "version"]
        # the same names in the default workspace are other objects, numbered afresh
        other = client.upload_model("fraud", LogisticRegression().fit(X, 1 - y), sample=X.head(20))
        assert other.version == 1 and other.artifact_sha256 != mv.artifact_sha256
        assert [m.name for m in client.services.metadata.list_models()] == ["fraud"]
        assert client.services.pipelines.list_pipelines() == []
        with pytest.raises(PipelineNotFound):
            client.pipeline("scoring").infer(X.head(1))
        assert client.query("SELECT count(*) AS n FROM logs")["n"][0] == 0
        assert client.services.monitors.all() == []
        assert all(e.target != "pipeline scoring" for e in client.services.audit.entries())
        assert risk.services.metadata.get_by_ref("fraud@champion").artifact_sha256 == mv.artifact_sha256
    with pytest.raises(NotFoundError, match="no workspace named 'nowhere'"):
        client.services.for_workspace("nowhere")
    assert client.services.for_workspace("default") is client.services


def test_a_workspace_reopens_with_what_it_stored(home, database_url: str) -> None:  # type: ignore[no-untyped-def]
    X, y = tabular(40)
    with Client(home=home, database_url=database_url) as root:
        root.services.create_workspace("ops")
        ops = root.services.for_workspace("ops")
        ops.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(10))
        assert ops.for_workspace("ops") is ops and ops.for_workspace("default") is root.services
    with Client(home=home, database_url=database_url, workspace="ops") as again:
        assert [m.name for m in again.services.metadata.list_models()] == ["m"]
