"""The dashboard over plain HTTP: who gets which page, what a session cookie is, and that no button works
without a session, the CSRF secret and the write permission. The browser tests (tests/e2e) cover the pages."""

from __future__ import annotations

import json
import re
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cryptography.fernet import Fernet
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from finalmile.dashboard.session import COOKIE, MAX_AGE_S, session_key
from finalmile.http.server import running_server
from tests.fixtures import tabular

PAGES = ["/ui", "/ui/models", "/ui/monitors", "/ui/sql"]
BUTTONS = [
    ("/ui/pipelines/m/deploy", {"version": "1"}),
    ("/ui/pipelines/m/rollback", {}),
    ("/ui/pipelines/m/route", {"variant": "a"}),
    ("/ui/pipelines/m/undeploy", {}),
    ("/ui/alerts/1/acknowledge", {}),
    ("/ui/rollouts/1/pause", {}),
    ("/ui/sql/save", {"name": "q", "sql": "SELECT 1"}),
    ("/ui/sql/delete", {"name": "q"}),
]


@pytest.fixture
def store(tmp_path: Path) -> Client:
    client = Client(home=tmp_path / "home")
    return client


def log_in(browser: httpx.Client, token: str) -> str:
    """Log `browser` in with `token`; returns the session's CSRF secret, as the pages carry it."""
    answer = browser.post("/ui/login", data={"token": token, "next": "/ui"})
    assert answer.status_code == 303 and answer.headers["location"] == "/ui"
    page = browser.get("/ui")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    return csrf.group(1)


def test_pages_need_a_session_and_a_session_is_a_safe_cookie(store: Client) -> None:
    _, owner = store.services.init_access("olga")
    with running_server(store.services, auth=True) as url, ExitStack() as stack:
        for path in PAGES + ["/ui/pipelines/m", "/ui/monitors/x"]:
            anonymous = httpx.get(url + path)
            assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/ui/login?next=")
        for path, form in BUTTONS:
            refused = httpx.post(url + path, data=form)
            assert refused.status_code == 401, path
        wrong = httpx.post(f"{url}/ui/login", data={"token": "fm_nope"})
        assert wrong.status_code == 401 and COOKIE not in wrong.cookies and "unknown" in wrong.text
        answer = httpx.post(f"{url}/ui/login", data={"token": owner, "next": "https://evil.example/"})
        assert answer.headers["location"] == "/ui"  # never a redirect off the dashboard
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
        assert f"Max-Age={MAX_AGE_S}" in cookie
        assert owner not in cookie  # the token travels encrypted, not readable from the cookie
        browser = stack.enter_context(httpx.Client(base_url=url))
        log_in(browser, owner)
        for path in PAGES:  # an empty store: every page renders its empty state
            page = browser.get(path)
            assert page.status_code == 200, (path, page.text[:500])
            assert "script-src 'self'" in page.headers["content-security-policy"]
        for path in ["/ui/pipelines/nope", "/ui/models/nope", "/ui/monitors/nope"]:
            missing = browser.get(path)
            assert missing.status_code == 404 and "nope" in missing.text, path
        tampered = httpx.get(f"{url}/ui", cookies={COOKIE: browser.cookies[COOKIE][:-4] + "AAAA"})
        assert tampered.status_code == 303
        key = session_key(None, store.services.settings.home)
        old = Fernet(key).encrypt_at_time(json.dumps({"token": owner, "csrf": "x"}).encode(), 1_000_000)
        assert httpx.get(f"{url}/ui", cookies={COOKIE: old.decode()}).status_code == 303  # expired
        out = browser.post("/ui/logout", data={})
        assert out.status_code == 303 and 'finalmile_session=""' in out.headers["set-cookie"]
    store.close()


def test_buttons_need_the_csrf_secret_and_the_write_permission(store: Client) -> None:
    X, y = tabular(60)
    store.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(20), alias="a")
    store.build_pipeline("m").add_split({"a": (0.5, "m@a"), "b": (0.5, "m@a")}).deploy()
    services = store.services
    _, owner = services.init_access("olga")
    services.set_member("val", "default", "viewer")
    _, viewer = services.create_token("val", "default", "viewer")
    audit_before = len(services.audit.entries())
    with running_server(services, auth=True) as url, httpx.Client(base_url=url) as browser:
        csrf = log_in(browser, viewer)
        for path, form in BUTTONS:
            forged = browser.post(path, data=form)  # no CSRF secret: refused before anything else
            assert forged.status_code == 403 and forged.json()["detail"] == {"field": "csrf"}, path
            as_viewer = browser.post(path, data=form | {"csrf": csrf})
            assert as_viewer.status_code == 403 and "viewer" in as_viewer.json()["error"], path
        assert browser.post("/ui/sql", data={"sql": "SELECT 1 AS one", "csrf": csrf}).status_code == 200
        assert len(services.audit.entries()) == audit_before
        editor = stack_client = httpx.Client(base_url=url)
        editor_csrf = log_in(editor, owner)
        routed = editor.post("/ui/pipelines/m/route", data={"variant": "b", "csrf": editor_csrf})
        assert routed.status_code == 303 and "variant+%27b%27" in routed.headers["location"]
        unknown = editor.post("/ui/pipelines/m/route", data={"variant": "zzz", "csrf": editor_csrf})
        assert "error=" in unknown.headers["location"] and "zzz" in unknown.headers["location"]
        bad = editor.post("/ui/pipelines/m/deploy", data={"version": "x", "csrf": editor_csrf})
        assert bad.status_code == 422 and "version" in bad.json()["error"]
        saved = editor.post("/ui/sql/save", data={"name": "bad name!", "sql": "SELECT 1", "csrf": editor_csrf})
        assert "error=name" in saved.headers["location"]
        saved = editor.post("/ui/sql/save", data={"name": "ones", "sql": "DROP TABLE logs", "csrf": editor_csrf})
        assert "error=sql" in saved.headers["location"] and "read-only" in unquote(saved.headers["location"])
        saved = editor.post("/ui/sql/save", data={"name": "ones", "sql": "SELECT 1", "csrf": editor_csrf})
        assert saved.status_code == 303 and "q=ones" in saved.headers["location"]
        assert "ones" in editor.get("/ui/sql").text
        stack_client.close()
    assert services.pipelines.deployment("m").version == 2  # type: ignore[union-attr]
    assert [e.action for e in services.audit.entries()][-3:] == ["version", "route", "save query"]
    store.close()


def test_the_dashboard_buttons_have_api_twins(store: Client) -> None:
    """Rollback, route-all and saved queries are the same services over the management API."""
    X, y = tabular(60)
    store.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(20), alias="a")
    store.build_pipeline("m").add_model_step("m@a").deploy()
    store.build_pipeline("m").add_split({"a": (0.5, "m@a"), "b": (0.5, "m@a")}).deploy()
    with running_server(store.services, auth=False) as url, httpx.Client(base_url=url + "/api/v1") as api:
        routed = api.post("/pipelines/m/route", json={"variant": "b"})
        assert routed.status_code == 200 and "b" in routed.json()["status"]
        assert store.services.pipelines.deployment("m").version == 3  # type: ignore[union-attr]
        assert "body.variant" in api.post("/pipelines/m/route", json={"variant": ""}).json()["error"]
        back = api.post("/pipelines/m/rollback")
        assert back.status_code == 200 and store.services.pipelines.deployment("m").version == 2  # type: ignore[union-attr]
        assert api.post("/pipelines/nope/rollback").status_code == 404
        saved = api.put("/queries/daily", json={"sql": "SELECT count(*) FROM logs"})
        assert saved.status_code == 200 and saved.json()["name"] == "daily"
        assert [q["name"] for q in api.get("/queries").json()] == ["daily"]
        for bad, why in [
            ("SELECT count(*) FROM inferences", "'inferences' is not one of the views"),
            ("DELETE FROM logs", "read-only"),
            ("SELEC 1", "syntax error"),
        ]:  # refused when saved, naming the problem, not each time someone opens it; the saved one stays
            refused = api.put("/queries/daily", json={"sql": bad})
            assert refused.status_code == 400 and why in refused.json()["error"], refused.text
        assert [q["sql"] for q in api.get("/queries").json()] == ["SELECT count(*) FROM logs"]
        too_long = api.put("/queries/daily", json={"sql": "x" * 30_000})
        assert too_long.status_code == 422 and "sql" in too_long.text
        assert api.put("/queries/bad name", json={"sql": "SELECT 1"}).status_code == 422
        assert api.delete("/queries/daily").status_code == 200
        assert api.delete("/queries/daily").status_code == 404
        assert api.get("/queries").json() == []
    store.close()


def test_a_query_downloads_as_csv_whatever_its_columns_hold(store: Client) -> None:
    """Lists, structs and bytes, which Arrow's CSV writer refuses, arrive as columns or text; bad SQL is a 4xx."""
    sql = "SELECT [0.5, 1.5]::DOUBLE[] AS p, {'a': 1} AS s, '\\xFF'::BLOB AS raw, 3 AS n"
    store.services.init_access("olga")
    _, viewer = store.services.create_token("olga", "default", "viewer")  # reading is all a download needs
    with running_server(store.services, auth=True) as url, httpx.Client(base_url=url) as browser:
        log_in(browser, viewer)
        answer = browser.get("/ui/sql/csv", params={"sql": sql})
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv"), answer.text
        assert answer.text.splitlines() == ['"p_0","p_1","s","raw","n"', '0.5,1.5,"{""a"": 1}","ff",3']
        wrong = browser.get("/ui/sql/csv", params={"sql": "SELECT * FROM nowhere"})
        assert wrong.status_code == 400 and "nowhere" in wrong.json()["error"]
    store.close()


def _chart(page: str, y_label: str) -> dict[str, Any]:
    """The one chart of a page with this y axis label, as the page hands it to the browser."""
    charts = [json.loads(c) for c in re.findall(r'class="chart-data">(.*?)</script>', page, re.S)]
    (chart,) = [c for c in charts if c.get("y_label") == y_label]
    return dict(chart)


def test_the_pipeline_page_compares_text_labels_as_text_and_survives_unreadable_ones(store: Client) -> None:
    """Labels sent as text ('1', 'no') against integer predictions made DuckDB cast 'no' to a number and the page a
    500; a label file DuckDB cannot read with the others costs the accuracy chart only."""
    X, y = tabular(60)
    store.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(20))
    pipeline = store.build_pipeline("p").add_model_step("m:1")
    pipeline.deploy()
    results = [pipeline.infer_with_metadata(X.iloc[[i]]) for i in range(4)]
    store.services.logs.flush()
    predicted = [str(r.table.column("label")[0].as_py()) for r in results]
    pipeline.add_ground_truth(
        pd.DataFrame({"request_id": [r.request_id for r in results], "label": predicted[:3] + ["no"]})
    )
    _, owner = store.services.init_access("olga")
    with running_server(store.services, auth=True) as url, httpx.Client(base_url=url) as browser:
        log_in(browser, owner)
        page = browser.get("/ui/pipelines/p")
        assert page.status_code == 200 and "out_label = label" in page.text
        accuracy = _chart(page.text, "accuracy (share correct)")
        assert [v for series in accuracy["series"].values() for v in series] == [0.75]  # 3 of 4 labels agree
        folder = store.services.reader.home / "ground_truth" / "pipeline=p"
        pq.write_table(pa.table({"key": ["k"], "label": [{"a": 1}]}), folder / "part-0-legacy.parquet")
        page = browser.get("/ui/pipelines/p")
        assert page.status_code == 200 and "The ground truth cannot be read" in page.text
        assert "a label file" in page.text and str(folder) not in page.text  # the server's paths stay its own
    store.close()


def test_a_generative_pipeline_page_shows_time_to_first_token_and_tokens(store: Client, tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from tests.fixtures import tiny_language_models

    causal, _ = tiny_language_models(tmp_path / "models")
    store.upload_model("lm", causal)
    pipeline = store.build_pipeline("chat").add_model_step("lm:1")
    pipeline.deploy()
    served = pipeline.infer(pd.DataFrame({"prompt": ["hello", "world", "the quick"], "max_tokens": [3, 3, 3]}))
    store.services.logs.flush()
    _, owner = store.services.init_access("olga")
    with running_server(store.services, auth=True) as url, httpx.Client(base_url=url) as browser:
        log_in(browser, owner)
        page = browser.get("/ui/pipelines/chat")
        assert page.status_code == 200 and "Generation, last 24 h" in page.text
        ttft = _chart(page.text, "time to first token (ms)")
        assert [v for v in ttft["series"]["p99"] if v is not None][0] > 0
        tokens = _chart(page.text, "tokens per call")
        per_call = [v for v in tokens["series"]["output tokens per call"] if v is not None]
        assert per_call == [pytest.approx(served.tokens_out.mean())]
    store.close()
