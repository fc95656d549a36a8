"""Who may do what in the client's workspace, as the embedded client speaks it (the remote client speaks the same
verbs over `/api/v1/tokens`, `/api/v1/members` and `/api/v1/whoami`, in its token's workspace)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from finalmile.access.store import MemberRecord, TokenRecord
from finalmile.config import parse_duration

if TYPE_CHECKING:
    from finalmile.services import Services


class MemberVerbs:
    """Mixed into the embedded client: it holds the store's own rights, so it acts as an owner of its workspace."""

    services: Services

    def whoami(self) -> dict[str, Any]:
        """The user, workspace and role this client acts as (embedded: the store's user, as an owner)."""
        return {"user": self.services.user, "workspace": self.services.workspace, "role": "owner", "token": None}

    def create_token(
        self, role: str, name: str = "", expires: str | None = None, user: str | None = None
    ) -> dict[str, Any]:
        """A new token in this workspace for `user` (default: this client's user); `expires` a lifetime such as
        30d. Its `token` secret is in this answer only."""
        lifetime = timedelta(seconds=parse_duration(expires, "expires")) if expires else None
        services = self.services
        record, secret = services.create_token(user or services.user, services.workspace, role, name, lifetime)
        return vars(record) | {"token": secret}

    def tokens(self) -> list[TokenRecord]:
        """This workspace's tokens with their role, expiry and last use (never their secret)."""
        return self.services.access.tokens(self.services.workspace)

    def revoke_token(self, token_id: int) -> TokenRecord:
        self.services.access.token_in(token_id, self.services.workspace)
        return self.services.revoke_token(token_id)

    def members(self) -> list[MemberRecord]:
        return self.services.access.members(self.services.workspace)

    def set_member(self, user: str, role: str) -> MemberRecord:
        """Give `user` `role` in this workspace (the user is made if new)."""
        return self.services.set_member(user, self.services.workspace, role)

    def remove_member(self, user: str) -> None:
        self.services.remove_member(user, self.services.workspace)
