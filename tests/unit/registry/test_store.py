"""The metadata store on SQLite and PostgreSQL (the `database_url` fixture runs each test on both)."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

import finalmile.registry.db
from finalmile.errors import AliasNotFound, FinalmileError, ModelNotFound, VersionPinnedError
from finalmile.registry.db import SCHEMA_HEAD
from finalmile.registry.store import MetadataStore, NewVersion


def new_version(sha: str = "a" * 64, **changes: object) -> NewVersion:
    fields: dict[str, object] = dict(
        framework="sklearn",
        runtime="onnx",
        artifact_sha256=sha,
        onnx_sha256="b" * 64,
        sample_sha256=None,
        schema={"inputs": [{"name": "x", "dtype": "float64", "shape": []}], "outputs": []},
        task="classification",
        classes=[0, 1],
        conversion={"status": "converted"},
        libraries={"numpy": "2"},
        tags={"team": "risk"},
        created_by="ana",
    )
    fields.update(changes)
    return NewVersion(**fields)  # type: ignore[arg-type]


@pytest.fixture
def store(database_url: str) -> MetadataStore:
    s = MetadataStore(database_url)
    yield s
    s.close()


def test_versions_count_up_and_keep_their_fields(store: MetadataStore) -> None:
    first = store.create_version("fraud", new_version())
    second = store.create_version("fraud", new_version("c" * 64))
    assert (first.version, second.version) == (1, 2)
    again = store.get_version("fraud", 1)
    assert again.schema == first.schema
    assert again.classes == [0, 1]
    assert again.tags == {"team": "risk"}
    assert again.created_by == "ana"
    assert again.created_at.tzinfo is not None
    assert abs((datetime.now(UTC) - again.created_at).total_seconds()) < 60
    assert store.get_version("fraud").version == 2  # latest
    assert [v.version for v in store.list_versions("fraud")] == [1, 2]


def test_aliases_move_between_versions(store: MetadataStore) -> None:
    store.create_version("fraud", new_version(), alias="champion")
    store.create_version("fraud", new_version())
    assert store.get_version("fraud", alias="champion").version == 1
    moved = store.set_alias("fraud", 2, "champion")
    assert moved.aliases == ["champion"]
    assert store.get_version("fraud", alias="champion").version == 2
    assert store.get_version("fraud", 1).aliases == []
    store.set_alias("fraud", 1, "challenger")
    summary = store.list_models()[0]
    assert (summary.name, summary.versions, summary.latest) == ("fraud", 2, 2)
    assert summary.aliases == {"champion": 2, "challenger": 1}
    store.delete_alias("fraud", "challenger")
    with pytest.raises(AliasNotFound):
        store.get_version("fraud", alias="challenger")


def test_unknown_models_versions_and_aliases(store: MetadataStore) -> None:
    with pytest.raises(ModelNotFound, match="model 'nope' not found"):
        store.get_version("nope")
    store.create_version("fraud", new_version())
    with pytest.raises(ModelNotFound, match="version 9"):
        store.get_version("fraud", 9)
    with pytest.raises(ModelNotFound):
        store.set_alias("fraud", 9, "champion")
    with pytest.raises(AliasNotFound):
        store.get_version("fraud", alias="champion")


def test_invalid_names_are_refused(store: MetadataStore) -> None:
    for bad in ("", "has space", "a:b", "a@b", "a/b"):
        with pytest.raises(FinalmileError, match="invalid model name"):
            store.create_version(bad, new_version())
    store.create_version("fraud", new_version())
    with pytest.raises(FinalmileError, match="invalid alias"):
        store.set_alias("fraud", 1, "42")
    assert [m.name for m in store.list_models()] == ["fraud"]


def test_deleting_a_pinned_version_is_refused(store: MetadataStore) -> None:
    store.create_version("fraud", new_version(), alias="champion")
    store.create_version("fraud", new_version())
    with pytest.raises(VersionPinnedError, match="pinned by alias 'champion'"):
        store.delete_version("fraud", 1)
    assert store.get_version("fraud", 1).version == 1  # still there
    store.delete_version("fraud", 2)
    with pytest.raises(ModelNotFound):
        store.get_version("fraud", 2)
    assert store.create_version("fraud", new_version()).version == 3  # numbers are never reused


def test_artifact_in_use_looks_at_every_artifact_column(store: MetadataStore) -> None:
    store.create_version("fraud", new_version("1" * 64, onnx_sha256="2" * 64, sample_sha256="3" * 64))
    assert all(store.artifact_in_use(d * 64) for d in "123")
    assert not store.artifact_in_use("4" * 64)


def test_concurrent_uploads_of_one_name_get_distinct_versions(store: MetadataStore) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        records = list(pool.map(lambda i: store.create_version("busy", new_version(f"{i:064d}")), range(24)))
    assert sorted(r.version for r in records) == list(range(1, 25))
    assert {r.artifact_sha256 for r in records} == {f"{i:064d}" for i in range(24)}


def test_migrations_are_applied_once_and_reopening_is_cheap(store: MetadataStore, database_url: str) -> None:
    store.create_version("fraud", new_version())
    reopened = MetadataStore(database_url)
    assert reopened.get_version("fraud").version == 1
    with reopened.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == SCHEMA_HEAD
    reopened.close()


def test_a_store_keeps_one_identity_that_no_other_store_has(
    store: MetadataStore, database_url: str, tmp_path: Path
) -> None:
    reopened = MetadataStore(database_url)
    other = MetadataStore(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        assert re.fullmatch("[0-9a-f]{32}", store.store_id)
        assert reopened.store_id == store.store_id != other.store_id
    finally:
        reopened.close()
        other.close()


def test_the_head_a_store_is_checked_against_is_the_migrations_own() -> None:
    # A new migration must move SCHEMA_HEAD too, or stores would open without it (the check skips Alembic).
    from alembic.script import ScriptDirectory

    migrations = Path(finalmile.registry.db.__file__).with_name("migrations")
    assert ScriptDirectory(str(migrations)).get_current_head() == SCHEMA_HEAD
