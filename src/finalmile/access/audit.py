"""The audit trail: an append-only table of state changes, shown by `finalmile audit`, `GET /api/v1/audit` and
the `audit` view of the SQL surface."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
from sqlalchemy import select

from finalmile.registry.store import MetadataStore, stored_utc, utc_now
from finalmile.registry.tables import AuditRow

AUDIT_SCHEMA = pa.schema(
    [
        ("at", pa.timestamp("us", tz="UTC")),
        ("actor", pa.string()),
        ("action", pa.string()),
        ("target", pa.string()),
        ("before", pa.string()),
        ("after", pa.string()),
    ]
)


@dataclass(frozen=True)
class AuditEntry:
    """One recorded change: `action` on `target` by `actor`, from `before` to `after` (None: nothing)."""

    at: datetime
    actor: str
    action: str
    target: str
    before: str | None
    after: str | None


def audit_row(actor: str, action: str, target: str, before: object = None, after: object = None) -> AuditRow:
    """One entry, for a store that records its change and the entry in one transaction."""
    return AuditRow(
        at=utc_now(),
        actor=actor[:200],
        action=action[:40],
        target=target[:400],
        before=None if before is None else str(before),
        after=None if after is None else str(after),
    )


class AuditTrail:
    """Appends changes and reads them back, oldest first; rows are never updated or deleted."""

    def __init__(self, metadata: MetadataStore) -> None:
        self._sessions = metadata.sessions

    def record(self, actor: str, action: str, target: str, before: object = None, after: object = None) -> None:
        with self._sessions.begin() as s:
            s.add(audit_row(actor, action, target, before, after))

    def entries(self, target: str | None = None, limit: int | None = None) -> list[AuditEntry]:
        """Changes, oldest first; `target` keeps those whose target starts with it (`pipeline fraud`)."""
        with self._sessions() as s:
            query = select(AuditRow).order_by(AuditRow.id)
            if target is not None:
                query = query.where(AuditRow.target.startswith(target, autoescape=True))
            rows = list(s.scalars(query))
        if limit is not None:
            rows = rows[-limit:]
        return [AuditEntry(stored_utc(r.at), r.actor, r.action, r.target, r.before, r.after) for r in rows]

    def table(self) -> pa.Table:
        """Every change as Arrow, for the SQL surface's `audit` view."""
        entries = self.entries()
        return pa.Table.from_pylist([vars(e) for e in entries], schema=AUDIT_SCHEMA)
