"""What people press: log in and out, and the editors' buttons (deploy, roll back, route, undeploy, acknowledge, steer
a rollout).

Every button is a form POST carrying the CSRF secret, done through the same `Services` operation as the API (so it
lands in the audit trail under the person's name), then a redirect back to the page with what happened.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from finalmile.dashboard.guard import Authorizer, PageGuards, Visitor
from finalmile.dashboard.render import render
from finalmile.dashboard.session import COOKIE, MAX_AGE_S, Sessions
from finalmile.errors import FinalmileError, Unauthorized


def back(path: str, done: str | None = None, error: str | None = None, **params: str) -> RedirectResponse:
    """A redirect to `path` that says what the button did (or why it did not)."""
    said = {k: v for k, v in (("done", done), ("error", error), *params.items()) if v}
    return RedirectResponse(f"{path}?{urlencode(said)}" if said else path, status_code=303)


async def press(path: str, fn: Any, *args: Any) -> RedirectResponse:
    """Run a state change off the event loop, then go back to `path` with its outcome."""
    try:
        outcome = await asyncio.get_running_loop().run_in_executor(None, fn, *args)
    except FinalmileError as exc:
        return back(path, error=exc.message)
    return back(path, done=str(outcome))


def _safe_next(target: str | None) -> str:
    """Only a dashboard path: a login link must not send the browser to another site."""
    if target and target.startswith("/ui") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui"


def router(guards: PageGuards, auth: Authorizer, sessions: Sessions, secure: bool) -> APIRouter:
    buttons = APIRouter(include_in_schema=False)

    @buttons.get("/ui/login")
    async def login_page(next: str | None = None, _: None = Depends(guards.public)) -> HTMLResponse:
        return render("login.html", None, next=_safe_next(next), auth=auth.enabled)

    @buttons.post("/ui/login")
    async def login(token: str = Form(""), next: str = Form("/ui"), _: None = Depends(guards.public)) -> Response:
        token = token.strip()
        try:
            await auth.authorize(f"Bearer {token}" if token else None, "read")
        except FinalmileError as exc:
            message = exc.message if isinstance(exc, Unauthorized) else "this token may not read the dashboard"
            return render("login.html", None, status=401, next=_safe_next(next), auth=auth.enabled, error=message)
        sealed, _session = sessions.issue(token)
        response = RedirectResponse(_safe_next(next), status_code=303)
        response.set_cookie(
            COOKIE, sealed, max_age=MAX_AGE_S, path="/ui", httponly=True, samesite="strict", secure=secure
        )
        return response

    @buttons.post("/ui/logout")
    async def logout(_: None = Depends(guards.public)) -> Response:
        response = RedirectResponse("/ui/login", status_code=303)
        response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict", secure=secure)
        return response

    def page_of(name: str) -> str:
        return f"/ui/pipelines/{quote(name, safe='')}"

    @buttons.post("/ui/pipelines/{name}/deploy")
    async def deploy(name: str, version: int = Form(..., ge=1), visitor: Visitor = Depends(guards.write)) -> Response:
        def run() -> str:
            record = visitor.services.deploy(name, version, None, visitor.actor)
            return f"deployed {name} version {record.version}"

        return await press(page_of(name), run)

    @buttons.post("/ui/pipelines/{name}/rollback")
    async def rollback(name: str, visitor: Visitor = Depends(guards.write)) -> Response:
        return await press(page_of(name), visitor.services.rollback, name, visitor.actor)

    @buttons.post("/ui/pipelines/{name}/route")
    async def route(
        name: str, variant: str = Form(..., max_length=200), visitor: Visitor = Depends(guards.write)
    ) -> Response:
        return await press(page_of(name), visitor.services.route_all, name, variant, visitor.actor)

    @buttons.post("/ui/pipelines/{name}/undeploy")
    async def undeploy(name: str, visitor: Visitor = Depends(guards.write)) -> Response:
        def run() -> str:
            visitor.services.undeploy(name, visitor.actor)
            return f"undeployed {name}"

        return await press(page_of(name), run)

    @buttons.post("/ui/rollouts/{rollout_id}/{action}")
    async def steer(rollout_id: int, action: str, visitor: Visitor = Depends(guards.write)) -> Response:
        def run() -> str:
            record = visitor.services.control_rollout(rollout_id, action, visitor.actor)
            return f"rollout {rollout_id}: {record.state}"

        return await press(f"/ui/rollouts/{rollout_id}", run)

    @buttons.post("/ui/alerts/{alert_id}/acknowledge")
    async def acknowledge(
        alert_id: int, monitor: str = Form("", max_length=200), visitor: Visitor = Depends(guards.write)
    ) -> Response:
        def run() -> str:
            record = visitor.services.acknowledge_alert(alert_id, visitor.actor)
            return f"alert {alert_id} acknowledged by {record.acknowledged_by}"

        path = f"/ui/monitors/{quote(monitor, safe='')}" if monitor else "/ui/monitors"
        return await press(path, run)

    return buttons
