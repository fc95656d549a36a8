"""Engines for the metadata store, and Alembic migrations applied automatically on first use."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from finalmile.errors import MissingDependencyError

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)
_MIGRATIONS = Path(__file__).with_name("migrations")
# Any constant works: it only has to be the same for every process that migrates this database.
_MIGRATION_LOCK_ID = 0x46_4D_31
SCHEMA_HEAD = "0014"
"""The newest migration's revision. A store already there opens without importing Alembic, which took ~0.2 s of
every command; tests/unit/registry/test_store.py holds it to the migrations' own head."""


def create_store_engine(url: str) -> Engine:
    """An engine for `url`. SQLite gets WAL, foreign keys and write transactions that take the lock up front."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    try:
        return create_engine(url, pool_pre_ping=True)
    except ModuleNotFoundError as exc:
        raise MissingDependencyError(exc.name or "psycopg", "postgres") from None


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Hand transaction control to SQLAlchemy's "begin" event below (the pysqlite recipe in SQLAlchemy's docs).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin_immediate(connection: Any) -> None:
    # A deferred transaction that reads and then writes fails at once with "database is locked" when another writer
    # got there first; taking the write lock at BEGIN makes concurrent writers wait their turn instead.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _alembic_config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; cheap when it is already there. Safe with concurrent processes."""
    if _stored_revision(engine) == SCHEMA_HEAD:
        return
    from alembic import command

    cfg = _alembic_config()
    with engine.begin() as conn:  # upgrade reads the revision again under the lock: another process may be done
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_ID})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def _stored_revision(engine: Engine) -> str | None:
    """The revision Alembic recorded in the store; None for a store it has not made yet."""
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except sa_exc.DBAPIError:  # no such table yet
        return None


def workspace_database_url(url: str, workspace: str) -> str | None:
    """Where workspace `workspace` keeps its metadata when the root store is at `url`: a schema of its own beside
    the root's on PostgreSQL (made if missing), or None for SQLite (a database file under the workspace's home)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return None
    engine = create_store_engine(url)
    try:
        with engine.begin() as conn:
            base = conn.execute(text("SELECT current_schema()")).scalar() or "public"
            schema = workspace_schema(base, workspace)
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_ID})  # two first uses
            _rename_schema_of_before(conn, base, workspace, schema)
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    finally:
        engine.dispose()
    return parsed.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)


def workspace_schema(base: str, workspace: str) -> str:
    """The PostgreSQL schema of `workspace`: distinct for any two names. PostgreSQL cuts names at 63 bytes, and
    workspace names may be 100 characters, so the name is shortened and a hash of the whole name follows it."""
    digest = hashlib.sha256(workspace.encode()).hexdigest()[:12]
    return f"{base[:20]}_ws_{workspace[:26]}_{digest}"


def _rename_schema_of_before(conn: Any, base: str, workspace: str, schema: str) -> None:
    """Stores made before 2026-12-06 named the schema `{base}_ws_{workspace}` cut at 63 characters: rename it to
    `schema` once. A cut name may have been shared by two workspaces, so it is left where it is, and said."""
    old = f"{base}_ws_{workspace}"
    exists = "SELECT 1 FROM pg_namespace WHERE nspname = :n"
    if (
        conn.execute(text(exists), {"n": old[:63]}).scalar() is None
        or conn.execute(text(exists), {"n": schema}).scalar()
    ):
        return
    if len(old) > 63:
        log.warning(
            "workspace %r: its old schema %r was cut to 63 characters and may hold another workspace's metadata too; "
            "left in place, the workspace starts in schema %r",
            workspace, old[:63], schema,
        )  # fmt: skip
        return
    conn.execute(text(f'ALTER SCHEMA "{old}" RENAME TO "{schema}"'))
