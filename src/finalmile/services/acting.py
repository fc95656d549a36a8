"""Acting as a caller: who a change is recorded as, and the record itself, in one place for every verb."""

from __future__ import annotations

from finalmile.access.audit import AuditTrail
from finalmile.config import FinalmileSettings
from finalmile.registry.upload import current_user


class Acting:
    """Mixed into `Services`: each verb takes `actor` (a request's caller, `Principal.actor`), None meaning this
    process's own user, and records what it changed through `changed`."""

    settings: FinalmileSettings
    audit: AuditTrail

    @property
    def user(self) -> str:
        """Recorded as who created what this process stores."""
        return self.settings.user or current_user()

    def acting(self, actor: str | None) -> str:
        """Who acts: the caller, or this process's user."""
        return actor or self.user

    def changed(
        self,
        actor: str | None,
        action: str,
        target: str,
        before: object = None,
        after: object = None,
        trail: AuditTrail | None = None,
    ) -> str:
        """Record one change in the audit trail (`trail`: another workspace's, for access changes that concern it)
        as `actor`; returns who acted."""
        who = self.acting(actor)
        (trail or self.audit).record(who, action, target, before, after)
        return who
