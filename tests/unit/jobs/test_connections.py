"""Stored connections: URLs encrypted at rest under FINALMILE_SECRET_KEY, masked wherever they are shown."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from finalmile import Client
from finalmile.config import FinalmileSettings
from finalmile.errors import ConflictError, InvalidInputError, NotFoundError
from finalmile.jobs.connections import mask
from finalmile.registry.tables import ConnectionRow
from tests.unit.cli.test_cli import run

URL = "postgresql+psycopg://scorer:s3cret-pw@db.internal:5432/sales?sslmode=require&api_token=tok123"


def keyed(home, database_url: str, key: str | None) -> Client:  # type: ignore[no-untyped-def]
    return Client(settings=FinalmileSettings(home=home, database_url=database_url, secret_key=key))


def test_a_url_is_encrypted_at_rest_masked_in_lists_and_audit_and_read_back_whole(home, database_url: str) -> None:  # type: ignore[no-untyped-def]
    key = Fernet.generate_key().decode()
    with keyed(home, database_url, key) as client:
        record = client.services.create_connection("warehouse", "postgres", URL)
        assert record.url == "postgresql+psycopg://scorer:***@db.internal:5432/sales?sslmode=require&api_token=***"
        with client.services.metadata.sessions() as s:
            row = s.scalar(select(ConnectionRow))
        assert row is not None and "s3cret-pw" not in row.url_encrypted and "tok123" not in row.url_encrypted
        assert [c.url for c in client.services.connections.list()] == [record.url]
        assert client.services.connections.url("warehouse") == URL
        assert all("s3cret" not in (e.after or "") for e in client.services.audit.entries())
        with pytest.raises(ConflictError):
            client.services.create_connection("warehouse", "postgres", URL)
    with keyed(home, database_url, Fernet.generate_key().decode()) as other:
        with pytest.raises(InvalidInputError, match="not the key it was stored with"):
            other.services.connections.url("warehouse")
    with keyed(home, database_url, None) as keyless, pytest.raises(InvalidInputError, match="FINALMILE_SECRET_KEY"):
        keyless.services.create_connection("other", "redis", "redis://127.0.0.1:6379/0")


def test_bad_connections_are_refused_naming_the_field(home, database_url: str) -> None:  # type: ignore[no-untyped-def]
    with keyed(home, database_url, Fernet.generate_key().decode()) as client:
        for name, type_, url, field in [
            ("x", "oracle", "oracle://h", "type"),
            ("x", "postgres", "redis://h", "url"),
            ("x", "redis", "", "url"),
            ("a b", "redis", "redis://h", "name"),
            ("x", "nats", "nats://h\r\nX: y", "url"),
        ]:
            with pytest.raises(InvalidInputError) as refused:
                client.services.create_connection(name, type_, url)
            assert refused.value.detail == {"field": field}
        with pytest.raises(NotFoundError):
            client.services.delete_connection("absent")
    with keyed(home, database_url, "not-a-key") as client, pytest.raises(InvalidInputError, match="not a Fernet"):
        client.services.create_connection("x", "redis", "redis://h")


def test_mask_hides_passwords_and_secret_parameters() -> None:
    assert mask("amqp://guest:guest@127.0.0.1:5672/") == "amqp://guest:***@127.0.0.1:5672/"
    assert (
        mask("s3://bucket/path?secret_access_key=abc&region=eu") == "s3://bucket/path?secret_access_key=***&region=eu"
    )
    assert mask("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"


def test_cli_creates_lists_and_deletes_connections(cli_env, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    code, key, _ = run(capsys, "connections", "keygen")
    monkeypatch.setenv("FINALMILE_SECRET_KEY", key.strip())
    code, out, _ = run(
        capsys, "connections", "create", "sales", "mariadb://root:pw@127.0.0.1/test", "--type", "mariadb"
    )
    assert code == 0 and "root:***@" in out and "pw@" not in out
    code, out, _ = run(capsys, "connections", "list")
    assert code == 0 and "sales" in out and "pw@" not in out
    code, _, err = run(capsys, "connections", "create", "bad", "x", "--type", "oracle")
    assert code == 1 and "type" in err and "Traceback" not in err
    assert run(capsys, "connections", "delete", "sales")[0] == 0
