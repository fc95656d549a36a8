"""Markers by folder (`pytest -m unit` is the fast loop) and the fixtures most tests share."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from finalmile.client import Client

HERE = Path(__file__).parent
POSTGRES_URL = os.environ.get("FINALMILE_TEST_DATABASE_URL")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        if HERE / "e2e" in path.parents:
            item.add_marker(pytest.mark.e2e)
        elif HERE / "integration" in path.parents or "postgresql" in item.name:
            item.add_marker(pytest.mark.integration)
        else:
            item.add_marker(pytest.mark.unit)


def _postgres_schema_url() -> Iterator[str]:
    """A fresh PostgreSQL schema per test, so tests never see each other's rows and can run in parallel."""
    if not POSTGRES_URL:
        if os.environ.get("FINALMILE_REQUIRE_POSTGRES"):
            pytest.fail("FINALMILE_REQUIRE_POSTGRES is set but FINALMILE_TEST_DATABASE_URL is not")
        pytest.skip("PostgreSQL store tests need FINALMILE_TEST_DATABASE_URL (CI sets it; .ci/run shows how)")
    from sqlalchemy import create_engine, text

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # an unreachable server must fail loudly in CI, not skip
        pytest.fail(f"cannot reach PostgreSQL at {POSTGRES_URL}: {exc}")
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:  # and the schemas of the workspaces the test made beside it
            made = conn.execute(text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p"), {"p": f"{schema}_ws_%"})
            for name in [schema, *made.scalars()]:
                conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every store-backed test runs on both backends."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'meta.db'}"
    else:
        yield from _postgres_schema_url()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL schema, for tests of what only PostgreSQL has."""
    yield from _postgres_schema_url()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def client(home: Path, database_url: str) -> Iterator[Client]:
    with Client(home=home, database_url=database_url) as c:
        yield c


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str) -> Path:
    """Environment for CLI tests: a store of their own (on both backends) and a wide terminal."""
    monkeypatch.setenv("FINALMILE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FINALMILE_DATABASE_URL", database_url)
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path


@pytest.fixture
def sqlite_client(home: Path) -> Iterator[Client]:
    """For tests about runtimes rather than the store: SQLite only."""
    with Client(home=home) as c:
        yield c
