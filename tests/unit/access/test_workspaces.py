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


def test_two_long_names_that_share_their_first_53_characters_are_two_workspaces(home, database_url: str) -> None:  # type: ignore[no-untyped-def]
    X, y = tabular(40)
    first, second = "a" * 60 + "first", "a" * 60 + "second"
    with Client(home=home, database_url=database_url) as root:
        for name in (first, second):
            root.services.create_workspace(name)
        root.services.for_workspace(first).upload_model("m", LogisticRegression().fit(X, y), sample=X.head(10))
        assert root.services.for_workspace(second).metadata.list_models() == []


def test_a_workspace_schema_of_before_is_renamed_once_and_keeps_its_models(postgres_url: str, home) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import create_engine, text

    from finalmile.registry.db import workspace_schema

    X, y = tabular(40)
    with Client(home=home, database_url=postgres_url) as root:
        root.services.create_workspace("ops")
        root.services.for_workspace("ops").upload_model("m", LogisticRegression().fit(X, y), sample=X.head(10))
    engine = create_engine(postgres_url)
    with engine.begin() as conn:  # put the schema back under the name stores made before the hash suffix
        base = conn.execute(text("SELECT current_schema()")).scalar()
        conn.execute(text(f'ALTER SCHEMA "{workspace_schema(base, "ops")}" RENAME TO "{base}_ws_ops"'))
    with Client(home=home, database_url=postgres_url, workspace="ops") as ops:
        assert [m.name for m in ops.services.metadata.list_models()] == ["m"]
    with engine.begin() as conn:
        names = set(
            conn.execute(
                text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p"), {"p": f"{base}_ws_%"}
            ).scalars()
        )
    engine.dispose()
    assert names == {workspace_schema(base, "ops")}
