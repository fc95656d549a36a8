"""Access control on a live server: every route declares a permission, anonymous callers and viewers change
nothing, tokens expire and are revoked, and `--no-auth` exists only on loopback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from finalmile.dashboard import STATIC_PATH
from finalmile.dashboard.guard import PageGuard, PublicPage
from finalmile.errors import Forbidden, Unauthorized
from finalmile.http.app import FinalmileApp
from finalmile.http.auth import Guard, OpenGuard
from finalmile.http.server import PUBLIC_DOCS, create_app
from tests.fixtures import tabular

READ_ONLY_POSTS = {
    "/api/v1/query",  # SQL in the sandbox: no file access, no writes
    "/ui/sql",  # the dashboard's SQL page: the same sandbox
    "/ui/login",  # sets a session cookie for a token that already exists
    "/ui/logout",
    "/v2/models/{name}/infer",  # inference changes no model, pipeline, deployment or monitor
    "/v2/models/{name}/versions/{version}/infer",
    "/pipelines/{name}/infer",
    "/api/v1/models/{ref}/explain",  # an explanation runs the model, as inference does, and stores nothing
    "/v1/chat/completions",  # the OpenAI-compatible surface is inference too
    "/v1/completions",
    "/v1/embeddings",
}
CHANGES = {"POST", "PUT", "PATCH", "DELETE"}


def declared(route: APIRoute) -> str | None:
    for dependency in route.dependant.dependencies:
        if isinstance(dependency.call, (Guard, OpenGuard, PageGuard, PublicPage)):
            return dependency.call.permission
    return None


def flat(routes: list[Any]) -> list[Any]:
    """FastAPI keeps an included router as one entry (`original_router`); our routers have no prefixes."""
    out = []
    for route in routes:
        out.extend(flat(route.original_router.routes) if hasattr(route, "original_router") else [route])
    return out


def routes(tmp_path: Path) -> list[tuple[str, str, str | None]]:
    with Client(home=tmp_path / "routes") as client:
        app = create_app(client.services, auth=True)
        listed = []
        for route in flat(app.management.routes):
            if isinstance(route, APIRoute):
                for method in route.methods:
                    listed.append((method, route.path, declared(route)))
            else:
                assert route.path in PUBLIC_DOCS | {STATIC_PATH}, f"{route.path}: a route of no declared permission"
        return listed


def test_every_route_declares_a_permission_and_no_viewer_route_changes_state(tmp_path: Path) -> None:
    listed = routes(tmp_path)
    assert len(listed) > 30
    for method, path, permission in listed:
        assert permission is not None, f"{method} {path} declares no permission"
        if method in CHANGES and permission in ("public", "read"):
            assert path in READ_ONLY_POSTS, f"{method} {path}: a viewer ({permission}) could change state"
    for route, permission in FinalmileApp.RAW_ROUTES.items():
        assert permission == "read", route
    public = {path for _, path, permission in listed if permission == "public"}
    assert public == {"/v2/health/live", "/v2/health/ready", "/v2", "/ui/login", "/ui/logout"}


def fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda m: "1" if "version" in m.group() or "id" in m.group() else "m", path)


def _message(body: dict[str, Any]) -> str:
    """The error's message: `{"error": "..."}`, or OpenAI's `{"error": {"message": ...}}` on the `/v1` surface."""
    error = body["error"]
    return str(error["message"] if isinstance(error, dict) else error)


def test_anonymous_and_viewer_callers_are_refused_and_nothing_changes(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    X, y = tabular(60)
    with Client(home=home) as client:
        client.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(20), alias="champion")
        client.build_pipeline("m").add_model_step("m@champion").deploy()
        client.services.init_access("alice")
        client.services.set_member("victor", "default", "viewer")
        _, viewer = client.services.create_token("victor", "default", "viewer", "dashboard")
        audit_before = len(client.services.audit.entries())
    server = server_factory(home, auth=True)
    for method, path, permission in routes(tmp_path):
        if path.startswith("/ui"):
            continue  # the dashboard's session cookie, not a bearer token: tests/integration/test_dashboard.py
        url = server.url + fill(path)
        anonymous = httpx.request(method, url, json={})
        if permission == "public":
            assert anonymous.status_code == 200, (method, path)
            continue
        assert anonymous.status_code == 401, (method, path, anonymous.text)
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        assert "Bearer" in _message(anonymous.json())
        if method in CHANGES and path not in READ_ONLY_POSTS:
            refused = httpx.request(method, url, json={}, headers={"authorization": f"Bearer {viewer}"})
            assert refused.status_code == 403, (method, path, refused.text)
            assert "is a viewer" in _message(refused.json()) and "permission" in _message(refused.json())
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    assert httpx.get(f"{server.url}/metrics", headers={"authorization": f"Bearer {viewer}"}).status_code == 200
    with Client(home=home) as client:  # nothing the refused calls asked for happened
        assert len(client.services.audit.entries()) == audit_before
        assert [v.version for v in client.services.metadata.list_versions("m")] == [1]
        assert client.services.pipelines.deployment("m") is not None


def test_remote_client_with_tokens_of_each_role(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    X, y = tabular(60)
    with Client(home=home) as client:
        _, owner = client.services.init_access("alice")
    server = server_factory(home, auth=True)
    with Client(url=server.url, token=owner) as alice:
        made = alice.create_token("editor", "ci", expires="1d")
        assert made["token"].startswith("fm_") and made["expires_at"] is not None
        assert made["role"] == "editor" and made["user"] == "alice"
    with Client(url=server.url, token=made["token"]) as ci:
        mv = ci.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(20), alias="champion")
        assert mv.version == 1
        ci.build_pipeline("p").add_model_step("m@champion").deploy()
        assert len(ci.pipeline("p").infer(X.head(3))) == 3
        with pytest.raises(Forbidden) as refused:  # the class the embedded client raises
            ci.tokens()
        assert refused.value.status_code == 403
    with Client(url=server.url) as nobody, pytest.raises(Unauthorized) as anonymous:
        nobody.models()
    assert anonymous.value.status_code == 401
    with Client(url=server.url, token=owner) as alice:
        tokens = alice.tokens()
        assert {t.name for t in tokens} == {"bootstrap", "ci"} and all("token" not in vars(t) for t in tokens)
        assert next(t for t in tokens if t.name == "ci").last_used_at is not None
        alice.revoke_token(made["id"])
    revoked = httpx.get(f"{server.url}/api/v1/models", headers={"authorization": f"Bearer {made['token']}"})
    assert revoked.status_code == 401 and "revoked" in revoked.json()["error"]
    with Client(home=home) as client:
        trail = [(e.actor, e.action) for e in client.services.audit.entries()]
    assert ("alice (token 1)", "create token") in trail
    assert (f"alice (token {made['id']})", "upload") in trail and ("alice (token 1)", "revoke token") in trail


def finalmile(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {"FINALMILE_HOME": str(home), "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "finalmile", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_cli_bootstrap_tokens_and_no_auth_only_on_loopback(tmp_path: Path) -> None:
    home = tmp_path / "home"
    refused = finalmile(home, "serve", "--host", "0.0.0.0", "--no-auth")
    assert refused.returncode == 1 and "beyond loopback" in refused.stderr and "Traceback" not in refused.stderr
    init = finalmile(home, "admin", "init")
    assert init.returncode == 0 and re.fullmatch(r"fm_[A-Za-z0-9_-]{43}\n", init.stdout), init.stdout
    again = finalmile(home, "admin", "init")
    assert again.returncode == 1 and "already set up" in again.stderr
    made = finalmile(home, "tokens", "create", "--role", "viewer", "--expires", "30d", "--name", "grafana")
    assert made.returncode == 0 and made.stdout.startswith("fm_") and "expires" in made.stderr
    listed = finalmile(home, "tokens", "list")
    assert "grafana" in listed.stdout and made.stdout.strip() not in listed.stdout
    assert finalmile(home, "tokens", "revoke", "2").returncode == 0
    assert "revoked" in finalmile(home, "tokens", "list").stdout
    bad = finalmile(home, "tokens", "create", "--role", "root")
    assert bad.returncode == 1 and "role" in bad.stderr and "Traceback" not in bad.stderr
    assert finalmile(home, "workspaces", "create", "risk").returncode == 0
    assert finalmile(home, "users", "add", "rita", "--role", "editor", "--workspace", "risk").returncode == 0
    assert "rita" in finalmile(home, "users", "list", "--workspace", "risk").stdout
    assert "create token" in finalmile(home, "audit").stdout


def test_the_first_serve_prints_an_owner_token(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "home").mkdir()
    server = server_factory(tmp_path / "home", auth=True)
    printed = re.search(r"^(fm_[A-Za-z0-9_-]{43})$", server.log.read_text(), re.MULTILINE)
    assert printed is not None
    whoami = httpx.get(f"{server.url}/api/v1/whoami", headers={"authorization": f"Bearer {printed.group(1)}"})
    assert whoami.json() == {"user": "admin", "workspace": "default", "role": "owner", "token": 1}


def test_a_workspace_sees_only_its_own_models_pipelines_logs_and_metrics(
    tmp_path: Path,
    server_factory: Any,
    database_url: str,
) -> None:
    """On SQLite and PostgreSQL (where a workspace's metadata is a schema of its own)."""
    home = tmp_path / "home"
    X, y = tabular(60)
    with Client(home=home, database_url=database_url) as client:
        client.services.init_access("alice")
        _, default_editor = client.services.create_token("alice", "default", "editor")
        client.services.create_workspace("risk")
        client.services.set_member("rita", "risk", "owner")
        _, risk_owner = client.services.create_token("rita", "risk", "owner")
    server = server_factory(home, env={"FINALMILE_DATABASE_URL": database_url}, auth=True)
    with Client(url=server.url, token=risk_owner) as rita:
        rita.upload_model("fraud", LogisticRegression().fit(X, y), sample=X.head(20), alias="champion")
        rita.build_pipeline("p").add_model_step("fraud@champion").deploy()
        assert len(rita.pipeline("p").infer(X.head(3))) == 3
        assert rita.query("SELECT count(*) AS n FROM logs")["n"][0] == 3
        assert rita.whoami()["workspace"] == "risk"
        assert {t.workspace for t in rita.tokens()} == {"risk"}  # not the default workspace's tokens
    body = {"inputs": [{"name": c, "shape": [1], "datatype": "FP64", "data": [0.1]} for c in X.columns]}
    risk_headers = {"authorization": f"Bearer {risk_owner}"}
    assert httpx.post(f"{server.url}/v2/models/p/infer", json=body, headers=risk_headers).status_code == 200
    with Client(url=server.url, token=default_editor) as alice:
        assert alice.models() == [] and alice.pipelines() == []
        assert alice.query("SELECT count(*) AS n FROM logs")["n"][0] == 0
        assert "pipeline p" not in set(alice.audit().get("target", []))
        alice.upload_model("fraud", LogisticRegression().fit(X, 1 - y), sample=X.head(20))  # the same name: another
    default_headers = {"authorization": f"Bearer {default_editor}"}
    refused = httpx.post(f"{server.url}/v2/models/p/infer", json=body, headers=default_headers)
    assert refused.status_code == 404
    assert httpx.get(f"{server.url}/api/v1/models/fraud", headers=default_headers).json()["version"] == 1
    assert 'pipeline="p"' in httpx.get(f"{server.url}/metrics", headers=risk_headers).text
    assert 'pipeline="p"' not in httpx.get(f"{server.url}/metrics", headers=default_headers).text
