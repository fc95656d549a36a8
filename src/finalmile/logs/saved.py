"""Saved SQL queries: a workspace's named queries over the log views, for the dashboard's SQL page and the API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from finalmile.errors import InvalidInputError
from finalmile.logs import sandbox
from finalmile.registry.store import MetadataStore, check_plain_name, row_named, stored_utc, utc_now
from finalmile.registry.tables import SavedQueryRow

MAX_SQL_CHARS = 20_000


@dataclass(frozen=True)
class SavedQuery:
    """A named query and who saved it last."""

    name: str
    sql: str
    created_by: str
    created_at: datetime


class SavedQueryStore:
    """Saves (replacing a query of the same name), lists and deletes a workspace's queries."""

    def __init__(self, metadata: MetadataStore) -> None:
        self._sessions = metadata.sessions

    def save(self, name: str, sql: str, actor: str) -> SavedQuery:
        check_plain_name(name, "name")
        if not sql.strip() or len(sql) > MAX_SQL_CHARS:
            raise InvalidInputError(f"sql: give 1-{MAX_SQL_CHARS:,} characters of SQL", {"field": "sql"})
        sandbox.check_alone(sql)  # refused now, naming the problem, rather than each time someone opens it
        with self._sessions.begin() as s:
            row = s.execute(select(SavedQueryRow).where(SavedQueryRow.name == name)).scalar_one_or_none()
            if row is None:
                row = SavedQueryRow(name=name)
                s.add(row)
            row.sql, row.created_by, row.created_at = sql, actor, utc_now()
            s.flush()
            return _saved(row)

    def all(self) -> list[SavedQuery]:
        with self._sessions() as s:
            return [_saved(r) for r in s.execute(select(SavedQueryRow).order_by(SavedQueryRow.name)).scalars()]

    def delete(self, name: str) -> None:
        with self._sessions.begin() as s:
            s.delete(row_named(s, SavedQueryRow, name, "saved query", "name"))


def _saved(row: SavedQueryRow) -> SavedQuery:
    return SavedQuery(row.name, row.sql, row.created_by, stored_utc(row.created_at))
