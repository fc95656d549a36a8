"""Workspaces, users, their roles and API tokens in the metadata store.

A token is 256 random bits shown once; only its SHA-256 is stored (a hash of that much entropy cannot be searched,
so a slow password hash would only slow every request down). A token acts with the lower of its own role and its
user's current role in the workspace, so removing a member or lowering their role takes effect on their tokens too.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from finalmile.access.audit import audit_row
from finalmile.access.roles import ROLES, Principal, Role, check_role
from finalmile.errors import ConflictError, Forbidden, InvalidInputError, NotFoundError, Unauthorized
from finalmile.registry.store import MetadataStore, check_plain_name, row_named, stored_utc, utc_now, valid_key
from finalmile.registry.tables import MemberRow, TokenRow, UserRow, WorkspaceRow

TOKEN_PREFIX = "fm_"
LAST_USED_EVERY_S = 60.0
"""`last_used_at` is written at most this often per token: a write per request would cost more than the request."""


@dataclass(frozen=True)
class TokenRecord:
    """A token as `tokens list` shows it: never the secret."""

    id: int
    prefix: str
    name: str
    user: str
    workspace: str
    role: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class MemberRecord:
    """A user's role in a workspace."""

    user: str
    workspace: str
    role: str


def describe_token(record: TokenRecord) -> str:
    """A token as the audit trail names it: never the secret."""
    return f"{record.role} in {record.workspace} for {record.user} ({record.prefix}…)"


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class AccessStore:
    """Reads and changes who may do what; `authenticate` turns a token into a `Principal`."""

    def __init__(self, metadata: MetadataStore) -> None:
        self._sessions = metadata.sessions

    # -- workspaces and members ---------------------------------------------------------------------------------

    def create_workspace(self, name: str) -> str:
        check_plain_name(name, "workspace")
        with self._sessions.begin() as s:
            if s.scalar(select(WorkspaceRow).where(WorkspaceRow.name == name)) is not None:
                raise ConflictError(f"workspace {name!r} already exists", {"workspace": name})
            s.add(WorkspaceRow(name=name, created_at=utc_now()))
        return name

    def workspaces(self) -> list[str]:
        with self._sessions() as s:
            return list(s.scalars(select(WorkspaceRow.name).order_by(WorkspaceRow.name)))

    def set_member(self, user: str, workspace: str, role: str) -> MemberRecord:
        """Give `user` (made if new) `role` in `workspace`, replacing the role they had there."""
        check_plain_name(user, "user")
        checked = check_role(role)
        with self._sessions.begin() as s:
            ws = self._workspace(s, workspace)
            row = s.scalar(select(UserRow).where(UserRow.name == user))
            if row is None:
                row = UserRow(name=user, created_at=utc_now())
                s.add(row)
                s.flush()
            member = s.get(MemberRow, (row.id, ws.id))
            if member is None:
                s.add(MemberRow(user_id=row.id, workspace_id=ws.id, role=checked))
            else:
                member.role = checked
        return MemberRecord(user, workspace, checked)

    def remove_member(self, user: str, workspace: str) -> None:
        with self._sessions.begin() as s:
            ws = self._workspace(s, workspace)
            member = s.get(MemberRow, (self._user(s, user).id, ws.id))
            if member is None:
                raise NotFoundError(f"user {user!r} is not a member of workspace {workspace!r}", {"user": user})
            s.delete(member)

    def members(self, workspace: str) -> list[MemberRecord]:
        with self._sessions() as s:
            ws = self._workspace(s, workspace)
            rows = s.execute(
                select(UserRow.name, MemberRow.role)
                .join(MemberRow, MemberRow.user_id == UserRow.id)
                .where(MemberRow.workspace_id == ws.id)
                .order_by(UserRow.name)
            )
            return [MemberRecord(name, workspace, role) for name, role in rows]

    def role_of(self, user: str, workspace: str) -> Role | None:
        with self._sessions() as s:
            role = s.scalar(
                select(MemberRow.role)
                .join(UserRow, MemberRow.user_id == UserRow.id)
                .join(WorkspaceRow, MemberRow.workspace_id == WorkspaceRow.id)
                .where(UserRow.name == user, WorkspaceRow.name == workspace)
            )
            return check_role(role) if role is not None else None

    # -- tokens -------------------------------------------------------------------------------------------------

    def has_tokens(self) -> bool:
        with self._sessions() as s:
            return s.scalar(select(TokenRow.id).limit(1)) is not None

    def create_token(
        self,
        user: str,
        workspace: str,
        role: str,
        name: str = "",
        expires_in: timedelta | None = None,
        *,
        actor: str,
    ) -> tuple[TokenRecord, str]:
        """A new token and its secret (the only time the secret exists outside the caller). Its role cannot be
        above its user's role in the workspace. The store's audit trail records it, by `actor`, in the same
        transaction: whatever path makes a token, it cannot make one unrecorded."""
        checked = check_role(role)
        if expires_in is not None and expires_in.total_seconds() <= 0:
            raise InvalidInputError("expires: a token's lifetime must be positive", {"field": "expires"})
        have = self.role_of(user, workspace)
        if have is None or ROLES.index(have) < ROLES.index(checked):
            raise Forbidden(
                f"user {user!r} is {have or 'not a member'} in workspace {workspace!r}: cannot hold a {checked} token",
                {"user": user, "role": checked},
            )
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = utc_now()
        with self._sessions.begin() as s:
            row = TokenRow(
                secret_sha256=hash_token(secret),
                prefix=secret[:10],
                name=name[:100] or f"{user}-{checked}",
                user_id=self._user(s, user).id,
                workspace_id=self._workspace(s, workspace).id,
                role=checked,
                created_at=now,
                expires_at=now + expires_in if expires_in is not None else None,
            )
            s.add(row)
            s.flush()
            record = self._record(s, row)
            s.add(audit_row(actor, "create token", f"token {record.id}", None, describe_token(record)))
            return record, secret

    def tokens(self, workspace: str | None = None) -> list[TokenRecord]:
        with self._sessions() as s:
            query = select(TokenRow).order_by(TokenRow.id)
            if workspace is not None:
                query = query.where(TokenRow.workspace_id == self._workspace(s, workspace).id)
            return [self._record(s, row) for row in s.scalars(query)]

    def token(self, token_id: int) -> TokenRecord:
        with self._sessions() as s:
            return self._record(s, self._token(s, token_id))

    def token_in(self, token_id: int, workspace: str) -> TokenRecord:
        """The token, if it belongs to `workspace`: another workspace's token is not its owners' to see."""
        record = self.token(token_id)
        if record.workspace != workspace:
            raise NotFoundError(f"no token with id {token_id}", {"token": token_id})
        return record

    def revoke(self, token_id: int) -> TokenRecord:
        with self._sessions.begin() as s:
            row = self._token(s, token_id)
            if row.revoked_at is None:
                row.revoked_at = utc_now()
            return self._record(s, row)

    def authenticate(self, secret: str) -> Principal:
        """The principal a token acts as; `Unauthorized` when it is unknown, expired or revoked."""
        if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
            raise Unauthorized("not a finalmile token")
        now = utc_now()
        with self._sessions() as s:
            row = s.scalar(select(TokenRow).where(TokenRow.secret_sha256 == hash_token(secret)))
            if row is None:
                raise Unauthorized("unknown token")
            if row.revoked_at is not None:
                raise Unauthorized(f"token {row.id} was revoked")
            if row.expires_at is not None and stored_utc(row.expires_at) <= now:
                raise Unauthorized(f"token {row.id} expired at {stored_utc(row.expires_at).isoformat()}")
            user, workspace = s.get_one(UserRow, row.user_id).name, s.get_one(WorkspaceRow, row.workspace_id).name
            token_id, token_role = row.id, check_role(row.role)
            stale = row.last_used_at is None or (now - stored_utc(row.last_used_at)).total_seconds() > LAST_USED_EVERY_S
        have = self.role_of(user, workspace)
        if have is None:
            raise Unauthorized(f"token {token_id}: user {user!r} is no longer a member of {workspace!r}")
        if stale:
            with self._sessions.begin() as s:
                s.get_one(TokenRow, token_id).last_used_at = now
        role = min(token_role, have, key=ROLES.index)
        return Principal(user, workspace, role, token_id)

    # -- rows ---------------------------------------------------------------------------------------------------

    def require_workspace(self, name: str) -> None:
        """NotFoundError unless workspace `name` exists."""
        with self._sessions() as s:
            self._workspace(s, name)

    def _workspace(self, s: Session, name: str) -> WorkspaceRow:
        return row_named(s, WorkspaceRow, name, "workspace", "workspace")

    def _user(self, s: Session, name: str) -> UserRow:
        return row_named(s, UserRow, name, "user", "user")

    def _token(self, s: Session, token_id: int) -> TokenRow:
        row = s.get(TokenRow, token_id) if valid_key(token_id) else None
        if row is None:
            raise NotFoundError(f"no token with id {token_id}", {"token": token_id})
        return row

    def _record(self, s: Session, row: TokenRow) -> TokenRecord:
        def moment(value: datetime | None) -> datetime | None:
            return stored_utc(value) if value is not None else None

        return TokenRecord(
            id=row.id,
            prefix=row.prefix,
            name=row.name,
            user=s.get_one(UserRow, row.user_id).name,
            workspace=s.get_one(WorkspaceRow, row.workspace_id).name,
            role=row.role,
            created_at=stored_utc(row.created_at),
            expires_at=moment(row.expires_at),
            revoked_at=moment(row.revoked_at),
            last_used_at=moment(row.last_used_at),
        )
