"""Connections: named, stored details of a database, a directory or a broker, for scheduled jobs and streams.

The URL (which carries the password) is encrypted at rest with Fernet (AES-128-CBC with an HMAC, from the
`cryptography` package) under a key from the environment, `FINALMILE_SECRET_KEY`; the store also keeps a masked
copy, which is all that lists, the audit trail and error messages ever show.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select
from sqlalchemy.orm import Session

from finalmile.errors import ConflictError, InvalidInputError
from finalmile.registry.store import MetadataStore, check_plain_name, row_named, stored_utc, utc_now
from finalmile.registry.tables import ConnectionRow

SCHEMES: dict[str, tuple[str, ...]] = {
    "postgres": ("postgresql", "postgresql+psycopg", "postgres"),
    "mariadb": ("mariadb", "mysql", "mysql+pymysql", "mariadb+pymysql"),
    "directory": ("file", ""),
    "fsspec": ("s3", "gs", "gcs", "az", "abfs", "http", "https", "file", "memory"),
    "nats": ("nats", "tls"),
    "redis": ("redis", "rediss"),
    "rabbitmq": ("amqp", "amqps"),
    "kafka": ("kafka",),
}
"""Each connection type and the URL schemes it accepts."""
_SECRET_PARAMS = ("password", "secret", "token", "key", "sig", "credential")
KEYGEN = 'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'


@dataclass(frozen=True)
class ConnectionRecord:
    """A connection as lists show it: the URL masked."""

    name: str
    type: str
    url: str
    created_by: str
    created_at: datetime

    @classmethod
    def from_payload(cls, body: dict[str, Any]) -> ConnectionRecord:
        return cls(**body | {"created_at": datetime.fromisoformat(body["created_at"])})


def mask(url: str) -> str:
    """The URL with its password and any secret-looking query parameter replaced by `***`."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    query = [(k, "***" if _is_secret(k) else v) for k, v in parse_qsl(parts.query)]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="*"), parts.fragment))


def _is_secret(parameter: str) -> bool:
    return any(s in parameter.lower() for s in _SECRET_PARAMS)


class ConnectionStore:
    """Creates, lists, reads (decrypted, for the job that uses it) and deletes connections."""

    def __init__(self, metadata: MetadataStore, key: str | None) -> None:
        self._sessions = metadata.sessions
        self._key = key

    def _fernet(self) -> Fernet:
        if not self._key:
            raise InvalidInputError(
                f"FINALMILE_SECRET_KEY is not set: connections are stored encrypted under it. Make one with {KEYGEN}",
                {"field": "FINALMILE_SECRET_KEY"},
            )
        try:
            return Fernet(self._key.encode())
        except ValueError:
            raise InvalidInputError(
                "FINALMILE_SECRET_KEY: not a Fernet key (32 url-safe base64-encoded bytes)",
                {"field": "FINALMILE_SECRET_KEY"},
            ) from None

    def create(self, name: str, type: str, url: str, actor: str) -> ConnectionRecord:
        check_plain_name(name, "name")
        if type not in SCHEMES:
            raise InvalidInputError(f"type: expected one of {', '.join(SCHEMES)}, got {type!r}", {"field": "type"})
        scheme = urlsplit(url).scheme.lower()
        if not url.strip() or scheme not in SCHEMES[type] or any(c in url for c in "\r\n\x00"):
            wanted = ", ".join(f"{s}://" for s in SCHEMES[type] if s) or "a path"
            raise InvalidInputError(f"url: a {type} connection takes {wanted}; got {mask(url)!r}", {"field": "url"})
        token = self._fernet().encrypt(url.encode()).decode()
        with self._sessions.begin() as s:
            if s.scalar(select(ConnectionRow.id).where(ConnectionRow.name == name)) is not None:
                raise ConflictError(f"connection {name!r} already exists: delete it first", {"name": name})
            row = ConnectionRow(
                name=name,
                type=type,
                url_encrypted=token,
                url_masked=mask(url),
                created_by=actor[:200],
                created_at=utc_now(),
            )
            s.add(row)
            s.flush()
            return _record(row)

    def list(self) -> list[ConnectionRecord]:
        with self._sessions() as s:
            return [_record(r) for r in s.scalars(select(ConnectionRow).order_by(ConnectionRow.name))]

    def url(self, name: str) -> str:
        """The URL in clear, for the job or stream that connects with it."""
        with self._sessions() as s:
            token = self._row(s, name).url_encrypted
        try:
            return str(self._fernet().decrypt(token.encode()).decode())
        except InvalidToken:
            raise InvalidInputError(
                f"connection {name!r}: cannot decrypt it with this FINALMILE_SECRET_KEY (not the key it was stored "
                "with)",
                {"field": "FINALMILE_SECRET_KEY"},
            ) from None

    def readable(self) -> dict[str, str]:
        """Every connection this key can read, by name, in clear: what a job of this workspace is handed."""
        found: dict[str, str] = {}
        if not self._key:
            return found
        for record in self.list():
            try:
                found[record.name] = self.url(record.name)
            except InvalidInputError:
                continue  # stored under another key
        return found

    def secrets(self) -> builtins.list[str]:
        """Every stored password and secret-looking query parameter, in clear, for a job's log to be masked with
        (none when no key is set: then no connection can be read either)."""
        if not self._key:
            return []
        found: builtins.list[str] = []
        for url in self.readable().values():
            parts = urlsplit(url)
            found += [parts.password or ""] + [v for k, v in parse_qsl(parts.query) if _is_secret(k)]
        return [secret for secret in found if secret]

    def delete(self, name: str) -> ConnectionRecord:
        with self._sessions.begin() as s:
            row = self._row(s, name)
            record = _record(row)
            s.delete(row)
            return record

    def _row(self, s: Session, name: str) -> ConnectionRow:
        return row_named(s, ConnectionRow, name, "connection", "name")


def _record(row: ConnectionRow) -> ConnectionRecord:
    return ConnectionRecord(row.name, row.type, row.url_masked, row.created_by, stored_utc(row.created_at))
