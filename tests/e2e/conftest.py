"""A live server with a fraud pipeline, traffic, ground truth and an alerting monitor, and Debian's chromium
driven by Playwright. Without the browser these tests skip, saying why; `.ci/run` installs it and sets
`FINALMILE_REQUIRE_BROWSER`, so there they fail instead."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from finalmile.http.server import running_server

ROOT = Path(__file__).parents[2]
SCREENSHOTS = ROOT / "test-output" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [  # the machine's network is closed: without these, chromium keeps trying to reach Google's hosts
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FEATURES = ["v1", "v2", "amount"]


def _missing(reason: str) -> None:
    if os.environ.get("FINALMILE_REQUIRE_BROWSER"):
        pytest.fail(f"FINALMILE_REQUIRE_BROWSER is set but {reason}")
    pytest.skip(reason)


@dataclass
class Site:
    """The running dashboard and the tokens of its three people."""

    url: str
    client: Client
    tokens: dict[str, str]

    def infer(self) -> httpx.Response:
        row = [{"v1": 0.1, "v2": -0.3, "amount": 12.5}]
        headers = {"authorization": f"Bearer {self.tokens['viewer']}"}
        return httpx.post(f"{self.url}/pipelines/fraud/infer", json=row, headers=headers, timeout=30)


def transactions(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, 2)), columns=["v1", "v2"])
    frame["amount"] = rng.gamma(2.0, 20.0, rows)
    frame["is_fraud"] = ((frame.v1 + frame.amount / 80 + rng.normal(0, 0.5, rows)) > 1.5).astype(int)
    return frame


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    client = Client(home=tmp_path_factory.mktemp("dashboard"))
    train = transactions(2_000, 1)
    X, y = train[FEATURES], train.is_fraud
    client.upload_model("fraud", LogisticRegression(max_iter=500).fit(X, y), sample=X.head(100), alias="champion")
    client.upload_model("fraud", LogisticRegression(C=0.01).fit(X, y), sample=X.head(100), alias="challenger")
    split = {"champion": (0.8, "fraud@champion"), "challenger": (0.2, "fraud@challenger")}
    client.build_pipeline("fraud").add_split(split).deploy()
    client.build_pipeline("fraud").add_split(split).add_check("high_risk", "out.score > 0.9").deploy()  # version 2
    services = client.services
    _, owner = services.init_access("olivia")
    tokens = {"owner": owner}
    for user, role in (("eddie", "editor"), ("vera", "viewer")):
        services.set_member(user, "default", role)
        tokens[role] = services.create_token(user, "default", role, "e2e", timedelta(hours=1))[1]
    start = datetime.now(UTC)
    client.build_assay("amount-drift", "fraud", "in_amount", baseline=X, window=2, warning=0.1, alert=0.25).save(start)
    with running_server(services, auth=True) as url:
        site = Site(url, client, tokens)
        traffic = transactions(150, 2)
        traffic["amount"] *= 10  # the drift the monitor catches
        labels = {}
        for i in range(len(traffic)):
            answer = httpx.post(
                f"{url}/pipelines/fraud/infer",
                content=traffic.iloc[[i]][FEATURES].to_json(orient="records"),
                headers={"authorization": f"Bearer {owner}", "content-type": "application/json"},
            )
            assert answer.status_code == 200, answer.text
            labels[answer.headers["finalmile-request-id"]] = int(traffic.is_fraud.iloc[i])
        client.pipeline("fraud").add_ground_truth(
            pd.DataFrame({"request_id": list(labels), "is_fraud": list(labels.values())})
        )
        deadline = time.monotonic() + 20
        while not services.monitors.alerts("amount-drift"):  # the server's scheduler may store them first
            assert time.monotonic() < deadline, "the drift monitor raised no alert"
            client.run_monitors()
            time.sleep(0.2)
        yield site
    client.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright for Python is not installed (pip install playwright)")
    if not Path(CHROMIUM).exists():
        _missing("Debian's chromium is not installed (apt-get install -y chromium)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    opened = context.new_page()
    yield opened
    context.close()


def log_in(page: Any, site: Site, role: str) -> None:
    page.goto(f"{site.url}/ui")
    assert "/ui/login" in page.url  # no session: the login page, not the data
    page.fill("#token", site.tokens[role])
    page.click("button[type=submit]")
    page.wait_for_url(f"{site.url}/ui")


def shoot(page: Any, name: str) -> Path:
    """A full-page screenshot under test-output/screenshots (looked at by a person before a change lands)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
