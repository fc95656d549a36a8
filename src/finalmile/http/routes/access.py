"""`/api/v1/tokens`, `/api/v1/members` and `/api/v1/whoami`: an owner manages who may do what in their workspace."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from finalmile.access.roles import Role
from finalmile.config import parse_duration
from finalmile.http.auth import Caller, Guards
from finalmile.http.routes import run
from finalmile.services import Services


class TokenRequest(BaseModel):
    """A new token in the caller's workspace; `user` defaults to the caller."""

    model_config = {"extra": "forbid"}

    role: Role
    user: str | None = Field(default=None, max_length=100)
    name: str = Field(default="", max_length=100)
    expires: str | None = Field(default=None, max_length=40, description="a lifetime such as 30d or 12h")


class MemberRequest(BaseModel):
    """A user's role in the caller's workspace (the user is made if new)."""

    model_config = {"extra": "forbid"}

    role: Role


def router(services: Services, guards: Guards) -> APIRouter:
    api = APIRouter(tags=["access"])

    @api.get("/api/v1/whoami")
    async def whoami(who: Caller = Depends(guards.read)) -> dict[str, Any]:
        return {
            "user": who.principal.user,
            "workspace": who.principal.workspace,
            "role": who.principal.role,
            "token": who.principal.token_id,
        }

    @api.get("/api/v1/tokens")
    async def list_tokens(who: Caller = Depends(guards.admin)) -> list[dict[str, Any]]:
        return [vars(t) for t in await run(services.access.tokens, who.principal.workspace)]

    @api.post("/api/v1/tokens", status_code=201)
    async def create_token(body: TokenRequest, who: Caller = Depends(guards.admin)) -> dict[str, Any]:
        """The secret is in this answer only; the server keeps its hash."""
        expires = timedelta(seconds=parse_duration(body.expires, "expires")) if body.expires else None
        record, secret = await run(
            services.create_token,
            body.user or who.principal.user,
            who.principal.workspace,
            body.role,
            body.name,
            expires,
            who.actor,
        )
        return vars(record) | {"token": secret}

    @api.delete("/api/v1/tokens/{token_id}")
    async def revoke_token(token_id: int, who: Caller = Depends(guards.admin)) -> dict[str, Any]:
        await run(services.access.token_in, token_id, who.principal.workspace)
        revoked = await run(services.revoke_token, token_id, who.actor)
        guards.auth.forget()
        return vars(revoked)

    @api.get("/api/v1/members")
    async def members(who: Caller = Depends(guards.admin)) -> list[dict[str, Any]]:
        return [vars(m) for m in await run(services.access.members, who.principal.workspace)]

    @api.put("/api/v1/members/{user}")
    async def set_member(user: str, body: MemberRequest, who: Caller = Depends(guards.admin)) -> dict[str, Any]:
        member = await run(services.set_member, user, who.principal.workspace, body.role, who.actor)
        guards.auth.forget()
        return vars(member)

    @api.delete("/api/v1/members/{user}")
    async def remove_member(user: str, who: Caller = Depends(guards.admin)) -> dict[str, str]:
        await run(services.remove_member, user, who.principal.workspace, who.actor)
        guards.auth.forget()
        return {"user": user, "workspace": who.principal.workspace, "status": "removed"}

    return api
