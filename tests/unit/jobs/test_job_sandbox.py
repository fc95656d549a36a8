"""A job runs sealed in its workspace: an editor of workspace `a` uploads one that tries every escape an
adversarial user tried against the server before jobs ran in a sandbox, and finds nothing of `b`'s, no secret, and
no way to mint a token."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from finalmile.config import FinalmileSettings
from finalmile.sandbox import bwrap_path
from tests.fixtures import tabular

ESCAPES = """
import os, json

HOME = {home!r}
ARTIFACTS = {artifacts!r}

def attempt(what, action):
    try:
        result = action()
    except BaseException as exc:
        print(what, "REFUSED", type(exc).__name__)
        return
    print(what, "GOT", json.dumps(result, default=str)[:200])

def main(ctx):
    print("env", sorted(os.environ))
    attempt("home", lambda: os.listdir(HOME))
    attempt("artifacts of b", lambda: os.listdir(ARTIFACTS))
    attempt("root's database", lambda: open(os.path.join(HOME, "finalmile.db"), "rb").read(16))
    def embedded():
        import finalmile
        with finalmile.Client(home=HOME, workspace="b") as c:
            return [m.name for m in c.services.metadata.list_models()]
    attempt("embedded client on b", embedded)
    attempt("own models", lambda: [m.name for m in ctx.client.models()])
    attempt("connections", lambda: sorted(ctx.connections))
    attempt("mint owner token", lambda: ctx.client.create_token("owner", "a", expires="1d"))
    attempt("mint admin token in default", lambda: ctx.client.create_token("owner", "default", expires="1d"))
    attempt("list tokens", lambda: ctx.client.tokens())
    attempt("logs of b", lambda: ctx.client.query("SELECT count(*) AS n FROM logs").to_dict("records"))
    def environs():  # every process it can see: its own sandbox's only
        found = []
        for pid in (p for p in os.listdir("/proc") if p.isdigit()):
            try:
                found.append(open("/proc/" + pid + "/environ", "rb").read())
            except OSError:
                pass
        return [e for e in found if b"SECRET_KEY" in e or b"DATABASE_URL" in e]
    attempt("server's environment", environs)
"""


@pytest.mark.skipif(
    bwrap_path() is None and not os.environ.get("FINALMILE_REQUIRE_SANDBOX"),
    reason="needs Debian's bubblewrap (.ci/run installs it and makes this test mandatory)",
)
def test_a_job_of_workspace_a_finds_nothing_of_b_no_secret_and_no_way_to_mint_a_token(
    home: Path, database_url: str, tmp_path: Path
) -> None:
    key = Fernet.generate_key().decode()
    X, y = tabular(60)
    with Client(
        settings=FinalmileSettings(home=home, database_url=database_url, secret_key=key, sandbox="bwrap")
    ) as root:
        services = root.services
        for ws in ("a", "b"):
            services.create_workspace(ws)
        services.set_member("alice", "a", "editor")
        services.init_access("admin")  # access set up: a job acts with its uploader's role, nothing more
        b = services.for_workspace("b")
        b.upload_model("secret-model", LogisticRegression().fit(X, y), sample=X.head(10))
        b.create_connection("b-db", "postgres", "postgresql://bob:B0bPa55@db.b:5432/b")
        a = services.for_workspace("a")
        a.upload_model("mine", LogisticRegression().fit(X, y), sample=X.head(10))
        a.create_connection("a-db", "postgres", "postgresql://al:Pa%40ss@db.a:5432/a")
        code = tmp_path / "escape.py"
        code.write_text(ESCAPES.format(home=str(home), artifacts=str(b.settings.home / "artifacts")))
        a.jobs.upload("escape", code, actor="alice")
        run = a.jobs.run("escape")
    log = run.log
    assert run.status == "succeeded", log
    env_line = next(line for line in log.splitlines() if line.startswith("env "))
    assert "FINALMILE_SECRET_KEY" not in env_line and "FINALMILE_DATABASE_URL" not in env_line and key not in log
    for what in ("home", "artifacts of b", "root's database", "embedded client on b", "mint owner token",
                 "mint admin token in default", "list tokens", "server's environment"):  # fmt: skip
        assert f"{what} REFUSED" in log or f"{what} GOT []" in log, (what, log)
    assert 'own models GOT ["mine"]' in log
    assert 'connections GOT ["a-db"]' in log and "b-db" not in log and "B0bPa55" not in log
    assert "secret-model" not in log
    with Client(home=home, database_url=database_url) as again:  # no token was made behind the audit trail's back
        assert [t.name for t in again.services.access.tokens()] == ["bootstrap"]
