"""Roles and permissions: what a `viewer`, an `editor` and an `owner` of a workspace may do.

A route declares the permission it needs; a role grants every permission up to its rank. Inference and the
read-only SQL surface are `read`: they change no model, pipeline, deployment or monitor (the log rows an inference
appends are an observation, not a change of the platform's state).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from finalmile.errors import InvalidInputError

Role = Literal["viewer", "editor", "owner"]
ROLES: tuple[Role, ...] = ("viewer", "editor", "owner")

Permission = Literal["public", "read", "write", "admin"]
"""`public`: no token (health probes, the API's own docs); `read`: viewers and up; `write`: editors and up
(upload, deploy, undeploy, aliases, monitors, ground truth); `admin`: owners (members and tokens)."""

_NEEDS: dict[Permission, int] = {"public": -1, "read": 0, "write": 1, "admin": 2}


def check_role(role: str, field: str = "role") -> Role:
    if role not in ROLES:
        raise InvalidInputError(f"{field}: expected one of {', '.join(ROLES)}, got {role!r}", {"field": field})
    return role


def allows(role: Role, permission: Permission) -> bool:
    return ROLES.index(role) >= _NEEDS[permission]


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: a user, in one workspace, with one role (the token's)."""

    user: str
    workspace: str
    role: Role
    token_id: int | None = None
    """None: not a token — the embedded SDK, the local CLI, or a server started with `--no-auth`."""

    @property
    def actor(self) -> str:
        """How the audit trail names this principal."""
        return self.user if self.token_id is None else f"{self.user}{_TOKEN_MARK}{self.token_id})"


_TOKEN_MARK = " (token "


def actor_user(actor: str) -> tuple[str, bool]:
    """The user an audit trail's `actor` (`Principal.actor`) names, and whether they acted with a token."""
    user, mark, _ = actor.partition(_TOKEN_MARK)
    return user, bool(mark)


def local_principal(user: str, workspace: str = "default") -> Principal:
    """The principal of code running with the store's own rights: it owns everything it can open."""
    return Principal(user, workspace, "owner")
