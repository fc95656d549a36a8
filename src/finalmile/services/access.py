"""Changes to who may do what, as the composition root offers them: each recorded in the audit trail of the
workspace it concerns (a token's creation by the access store itself, in the same transaction)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from finalmile.access.audit import AuditTrail
from finalmile.access.roles import actor_user
from finalmile.access.store import AccessStore, MemberRecord, TokenRecord, describe_token
from finalmile.errors import ConflictError, Forbidden
from finalmile.services.acting import Acting


class AccessVerbs(Acting):
    """The access verbs of `Services` (a mixin: it holds no state of its own)."""

    access: AccessStore
    workspace: str

    def for_workspace(self, name: str) -> Any:
        raise NotImplementedError

    def init_access(self, user: str = "admin") -> tuple[TokenRecord, str]:
        """The first owner token (of `user` in `default`), printed once by `finalmile admin init` or the first
        `serve` with auth on; refused once any token exists, so it cannot be used to take over a store."""
        if self.access.has_tokens():
            raise ConflictError("access is already set up: an owner makes more tokens with `finalmile tokens create`")
        self.set_member(user, "default", "owner", actor=self.user)
        return self.create_token(user, "default", "owner", "bootstrap", actor=self.user)

    def _trail(self, workspace: str) -> AuditTrail:
        """Access changes are recorded in the audit trail of the workspace they concern."""
        return self.for_workspace(workspace).audit

    def set_member(self, user: str, workspace: str, role: str, actor: str | None = None) -> MemberRecord:
        before = self.access.role_of(user, workspace)
        member = self.access.set_member(user, workspace, role)
        self.changed(actor, "member", f"workspace {workspace} user {user}", before, role, self._trail(workspace))
        return member

    def remove_member(self, user: str, workspace: str, actor: str | None = None) -> None:
        before = self.access.role_of(user, workspace)
        self.access.remove_member(user, workspace)
        target = f"workspace {workspace} user {user}"
        self.changed(actor, "remove member", target, before, None, self._trail(workspace))

    def create_workspace(self, name: str, actor: str | None = None) -> str:
        self.access.create_workspace(name)
        self.changed(actor, "create workspace", f"workspace {name}", None, name)
        return name

    def create_token(
        self,
        user: str,
        workspace: str,
        role: str,
        name: str = "",
        expires_in: timedelta | None = None,
        actor: str | None = None,
    ) -> tuple[TokenRecord, str]:
        """A new token and its secret, shown once; the audit trail records the token, never the secret (the
        access store records it in the root's trail; another workspace's own trail shows it too)."""
        record, secret = self.access.create_token(user, workspace, role, name, expires_in, actor=self.acting(actor))
        if workspace != "default":
            after = describe_token(record)
            self.changed(actor, "create token", f"token {record.id}", None, after, self._trail(workspace))
        return record, secret

    def revoke_token(self, token_id: int, actor: str | None = None) -> TokenRecord:
        record = self.access.revoke(token_id)
        self.changed(actor, "revoke token", f"token {record.id}", "active", "revoked", self._trail(record.workspace))
        return record

    def job_role(self, uploader: str) -> str:
        """The role a job acts with: its uploader's current role in this workspace. A job uploaded without a token
        (embedded, the local CLI, a `--no-auth` server: the store's own user) by someone who is not a member acts as
        an editor, all a job needs; a job a member uploaded with a token does not run once they are not one."""
        user, with_token = actor_user(uploader)
        role = self.access.role_of(user, self.workspace)
        if role is not None:
            return role
        if not with_token:
            return "editor"
        raise Forbidden(f"{user!r}, who uploaded this job, is no longer a member of workspace {self.workspace!r}")
