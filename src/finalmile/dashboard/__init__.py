"""`/ui`: the dashboard for people who do not code, server-rendered (Jinja2, htmx, uPlot vendored under `static/`).

It reads the same services as the API (DuckDB over the logs, the stores) and changes state only through the same
`Services` operations, under the logged-in person's name and role.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from finalmile.dashboard import actions, pages, sql
from finalmile.dashboard.guard import Authorizer, LoginRequired, PageGuards
from finalmile.dashboard.session import Sessions, session_key
from finalmile.services import Services

STATIC_PATH = "/ui/static"


def install(app: FastAPI, root: Services, auth: Authorizer) -> None:
    """Add the dashboard's pages, buttons and static files to the management app."""
    sessions = Sessions(session_key(root.settings.secret_key, root.settings.home))
    guards = PageGuards(auth, root, sessions)
    app.include_router(pages.router(guards))
    app.include_router(sql.router(guards))
    app.include_router(actions.router(guards, auth, sessions, secure=root.settings.dashboard_secure_cookie))
    app.mount(STATIC_PATH, StaticFiles(directory=Path(__file__).parent / "static"), name="dashboard-static")

    @app.exception_handler(LoginRequired)
    async def _login(_: Request, exc: LoginRequired) -> RedirectResponse:
        return RedirectResponse(f"/ui/login?next={quote(exc.path)}", status_code=303)
