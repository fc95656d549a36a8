"""Templates and the few filters they need: numbers, durations and UTC times written for people."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from finalmile.dashboard.guard import Visitor

TEMPLATES = Path(__file__).parent / "templates"
SECURITY_HEADERS = {
    # Scripts only from our own vendored files: chart data travels as JSON, never as inline script.
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def _number(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def _utc(moment: datetime | None) -> str:
    if moment is None:
        return "–"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _chart(spec: dict[str, Any]) -> Markup:
    """A chart's data as inert JSON for `charts.js` (`</` escaped, so a value cannot close the script element)."""
    text = json.dumps(spec, default=str).replace("</", "<\\/")
    return Markup(f'<script type="application/json" class="chart-data">{text}</script>')  # noqa: S704


_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), trim_blocks=True)
_env.filters.update(number=_number, utc=_utc, percent=_percent, chart=_chart)


def render(template: str, visitor: Visitor | None, status: int = 200, **context: Any) -> HTMLResponse:
    """A page (or, for an htmx request, the fragment template it names) with the visitor and CSRF secret."""
    html = _env.get_template(template).render(
        visitor=visitor, csrf=visitor.session.csrf if visitor else "", now=datetime.now(UTC), **context
    )
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
