"""Who a request is and whether it may do what it asks: bearer tokens checked against the access store.

Every route declares a permission with a `Guard` (a FastAPI dependency that returns the caller's `Principal`);
the raw inference routes and `/metrics` ask the same `Authenticator`. A token seen recently is trusted from memory
for `CACHE_S` seconds, so the one-row path does not pay a database read per request; a revocation through this
server takes effect at once, one through another process within `CACHE_S`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from finalmile.access.roles import Permission, Principal, allows
from finalmile.access.store import AccessStore
from finalmile.errors import Forbidden, Unauthorized
from finalmile.services import Services

CACHE_S = 5.0
_MAX_CACHED = 10_000


class Authenticator:
    """Turns an `Authorization` header into a `Principal` and checks it against a permission."""

    def __init__(
        self, access: AccessStore, enabled: bool, local: Principal, grants: Mapping[str, Principal] | None = None
    ) -> None:
        self.access = access
        self.enabled = enabled
        """False: `--no-auth`, every request acts as `local` (a laptop's loopback server)."""
        self.local = local
        self.grants = grants if grants is not None else {}
        """Secrets held in memory only, each valid while its holder lives (a running job's `ctx.client`)."""
        self._cache: dict[str, tuple[float, Principal]] = {}

    async def authorize(self, authorization: str | None, permission: Permission) -> Principal:
        if permission == "public":
            return self.local if not self.enabled else Principal("anonymous", "default", "viewer")
        principal = await self.principal(authorization)
        if not allows(principal.role, permission):
            raise Forbidden(
                f"{principal.actor} is a {principal.role} in workspace {principal.workspace!r}: "
                f"this needs the {permission} permission ({_WHO[permission]})",
                {"role": principal.role, "permission": permission},
            )
        return principal

    async def principal(self, authorization: str | None) -> Principal:
        if not self.enabled:
            return self.local
        secret = _bearer(authorization)
        granted = self.grants.get(secret)
        if granted is not None:
            return granted
        cached = self._cache.get(secret)
        if cached is not None and time.monotonic() - cached[0] < CACHE_S:
            return cached[1]
        principal = await asyncio.get_running_loop().run_in_executor(None, self.access.authenticate, secret)
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[secret] = (time.monotonic(), principal)
        return principal

    def forget(self) -> None:
        """Drop what is remembered (after a token is revoked or a member's role changes here)."""
        self._cache.clear()


_WHO: dict[Permission, str] = {
    "public": "anyone",
    "read": "viewers, editors and owners",
    "write": "editors and owners",
    "admin": "owners",
}


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("authentication required: send 'Authorization: Bearer <token>' (finalmile tokens create)")
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return secret.strip()


_scheme = HTTPBearer(auto_error=False, description="an API token from `finalmile tokens create`")


@dataclass(frozen=True)
class Caller:
    """Who a request acts as, and the services of their workspace: a route reaches no other workspace's data."""

    principal: Principal
    services: Services

    @property
    def actor(self) -> str:
        return self.principal.actor


async def services_of(root: Services, principal: Principal) -> Services:
    """The caller's workspace's services; the first request of a workspace opens its store off the event loop."""
    if principal.workspace == root.workspace:
        return root
    return await asyncio.get_running_loop().run_in_executor(None, root.for_workspace, principal.workspace)


class Guard:
    """A route's declared permission: a dependency that authenticates the caller and returns a `Caller`."""

    def __init__(self, auth: Authenticator, root: Services, permission: Permission) -> None:
        self.auth = auth
        self.root = root
        self.permission = permission

    async def __call__(self, credentials: HTTPAuthorizationCredentials | None = Depends(_scheme)) -> Caller:
        header = f"{credentials.scheme} {credentials.credentials}" if credentials is not None else None
        principal = await self.auth.authorize(header, self.permission)
        return Caller(principal, await services_of(self.root, principal))


class OpenGuard:
    """The declared permission of a route anyone may call (health probes): no token asked, none documented."""

    permission: Permission = "public"

    def __init__(self, auth: Authenticator, root: Services) -> None:
        self.auth = auth
        self.root = root

    async def __call__(self) -> Caller:
        return Caller(await self.auth.authorize(None, "public"), self.root)


class Guards:
    """One `Guard` per permission, for routers to declare theirs: `who: Caller = Depends(guards.write)`."""

    def __init__(self, auth: Authenticator, root: Services) -> None:
        self.auth = auth
        self.public = OpenGuard(auth, root)
        self.read = Guard(auth, root, "read")
        self.write = Guard(auth, root, "write")
        self.admin = Guard(auth, root, "admin")
