"""Who is looking at a page and what they may press: the dashboard's declared permission per route.

A page asks for `read`, a button for `write`; the role is the session token's, checked by the same authenticator
as the API's bearer tokens. A request that changes state must echo the session's CSRF secret (a hidden form field
or the `X-CSRF-Token` header htmx sends), so a page on another site cannot press a button with the user's cookie.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from fastapi import Request

from finalmile.access.roles import Permission, Principal, allows
from finalmile.dashboard.session import COOKIE, CSRF_FIELD, CSRF_HEADER, Session, Sessions
from finalmile.errors import Forbidden, Unauthorized
from finalmile.services import Services

CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Authorizer(Protocol):
    """The server's authenticator, as the dashboard uses it."""

    enabled: bool

    async def authorize(self, authorization: str | None, permission: Permission) -> Principal: ...


class LoginRequired(Exception):
    """A page was asked for without a valid session: the browser is sent to the login page."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


@dataclass(frozen=True)
class Visitor:
    """The person on a page: who they are, their workspace's services, their session (for the CSRF secret)."""

    principal: Principal
    services: Services
    session: Session
    done: str | None = None
    """What the last button did, or why it did not (`error`): shown once at the top of the page."""
    error: str | None = None

    @property
    def actor(self) -> str:
        return self.principal.actor

    @property
    def can_write(self) -> bool:
        """Whether the page shows buttons that change state (a viewer sees none)."""
        return allows(self.principal.role, "write")


class PageGuard:
    """A dashboard route's declared permission: a dependency that returns the `Visitor`, or refuses."""

    def __init__(self, auth: Authorizer, root: Services, sessions: Sessions, permission: Permission) -> None:
        self.auth = auth
        self.root = root
        self.sessions = sessions
        self.permission = permission

    async def __call__(self, request: Request) -> Visitor:
        session = self.sessions.open(request.cookies.get(COOKIE))
        changes = request.method in CHANGES
        if session is None:
            if not changes:
                raise LoginRequired(request.url.path)
            raise Unauthorized("log in to the dashboard first: the session is missing or has expired")
        if changes:
            sent = request.headers.get(CSRF_HEADER) or (await request.form()).get(CSRF_FIELD)
            if not session.csrf_matches(sent if isinstance(sent, str) else None):
                raise Forbidden(
                    f"{CSRF_FIELD}: the form's CSRF token is missing or wrong (reload the page and try again)",
                    {"field": CSRF_FIELD},
                )
        try:
            principal = await self.auth.authorize(f"Bearer {session.token}", self.permission)
        except Unauthorized:
            if not changes:
                raise LoginRequired(request.url.path) from None
            raise
        services = self.root
        if principal.workspace != self.root.workspace:
            loop = asyncio.get_running_loop()
            services = await loop.run_in_executor(None, self.root.for_workspace, principal.workspace)
        said = request.query_params
        return Visitor(principal, services, session, said.get("done"), said.get("error"))


class PageGuards:
    """The dashboard's permissions: `read` for pages, `write` for buttons, `public` for logging in."""

    def __init__(self, auth: Authorizer, root: Services, sessions: Sessions) -> None:
        self.public = PublicPage()
        self.read = PageGuard(auth, root, sessions, "read")
        self.write = PageGuard(auth, root, sessions, "write")


class PublicPage:
    """The declared permission of the login and logout pages: anyone may open them."""

    permission: Permission = "public"

    async def __call__(self) -> None:
        return None
