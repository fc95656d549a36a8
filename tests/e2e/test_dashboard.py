"""The dashboard in a real browser: log in, read traffic and monitors, query SQL, and press (or be refused) buttons."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.e2e.conftest import Site, log_in, shoot


def test_login_then_the_overview_shows_the_pipeline_and_its_traffic(page: Any, site: Site) -> None:
    page.goto(f"{site.url}/ui/login")
    page.fill("#token", "fm_not-a-token")
    page.click("button[type=submit]")
    assert page.locator(".notice.bad").is_visible()  # a wrong token is told so, and gets no session
    log_in(page, site, "viewer")
    row = page.locator("tr[data-pipeline=fraud]")
    cells = row.locator("td")
    assert cells.nth(1).inner_text() == "v2"
    requests_hour, _ = cells.nth(2).inner_text().split(" · ")
    assert float(requests_hour) == round(150 / 3600, 2)  # 150 one-row requests in the last hour, per second
    assert row.locator(".spark canvas").count() == 1  # the sparkline is drawn
    assert page.locator("th", has_text="Latency p50").is_visible()
    shoot(page, "overview")
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    page.reload()
    assert page.locator("tr[data-pipeline=fraud]").is_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 400  # the table scrolls, not the page
    shoot(page, "overview-phone")


def test_pipeline_and_models_pages(page: Any, site: Site) -> None:
    log_in(page, site, "viewer")
    page.click("text=fraud")
    page.wait_for_url(re.compile(r"/ui/pipelines/fraud"))
    assert "A/B split" in page.inner_text("main")
    variants = page.locator("#variants tbody tr")
    assert sorted(variants.nth(i).locator("td").first.inner_text() for i in range(variants.count())) == [
        "challenger",
        "champion",
    ]
    assert page.locator(".chart canvas").count() >= 3  # traffic, scores, accuracy against ground truth
    assert "olivia" in page.inner_text("#history") or site.client.services.user in page.inner_text("#history")
    shoot(page, "pipeline-viewer")
    page.click("nav >> text=Models")
    page.click("text=fraud")
    assert "ONNX conversion" in page.inner_text("main") and "Schema" in page.inner_text("main")
    shoot(page, "model")


def test_a_monitor_chart_its_histograms_and_acknowledging_its_alert(page: Any, site: Site) -> None:
    log_in(page, site, "editor")
    page.click("nav >> text=Monitors")
    shoot(page, "monitors")
    page.click("#monitors >> text=amount-drift")
    assert page.locator("#score-chart canvas").count() == 1
    assert page.locator("#histogram canvas").count() == 1
    alert = page.locator("#alerts tbody tr").first
    assert "alert" in alert.inner_text()
    alert_id = int(alert.get_attribute("data-alert") or 0)
    shoot(page, "monitor")
    page.once("dialog", lambda dialog: dialog.accept())
    alert.locator("button", has_text="Acknowledge").click()
    page.wait_for_load_state()
    assert "acknowledged by eddie" in page.inner_text(".notice.ok")
    pressed = next(a for a in site.client.services.monitors.alerts("amount-drift") if a.id == alert_id)
    assert pressed.acknowledged_by is not None and pressed.acknowledged_by.startswith("eddie")
    assert page.locator(f"#alerts tr[data-alert='{alert_id}'] button").count() == 0  # no second press


def test_a_sql_query_its_chart_and_csv_download(page: Any, site: Site) -> None:
    log_in(page, site, "viewer")
    page.click("nav >> text=SQL")
    page.fill("#sql", "SELECT variant, count(*) AS rows FROM logs GROUP BY variant ORDER BY variant")
    page.click("#run")
    page.wait_for_selector("#sql-table")
    cells = [c.inner_text() for c in page.locator("#sql-table tbody td").all()]
    assert cells[0::2] == ["challenger", "champion"] and sum(int(c) for c in cells[1::2]) == 150
    page.click("#chart-button")
    assert page.locator("#sql-chart canvas").count() == 1
    shoot(page, "sql")
    with page.expect_download() as download:
        page.click("#csv")
    text = Path(download.value.path()).read_text()
    assert text.splitlines()[0] == '"variant","rows"' and len(text.splitlines()) == 3
    page.fill("#sql", "SELECT nope FROM logs")
    page.click("#run")
    assert "nope" in page.locator("#sql-error").inner_text()  # the error names what is wrong, the page lives on


def test_a_viewer_sees_no_buttons_and_a_forged_post_is_refused(page: Any, site: Site) -> None:
    log_in(page, site, "viewer")
    page.goto(f"{site.url}/ui/pipelines/fraud")
    assert page.locator("button", has_text="Roll back").count() == 0
    assert page.locator("#deploy").count() == 0 and page.locator("button", has_text="Undeploy").count() == 0
    before = site.client.services.pipelines.deployment("fraud")
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    forged = page.request.post(f"{site.url}/ui/pipelines/fraud/rollback", form={"csrf": csrf})
    assert forged.status == 403 and "viewer" in forged.json()["error"]  # the session's role, not the page, decides
    no_csrf = page.request.post(f"{site.url}/ui/pipelines/fraud/undeploy", form={})
    assert no_csrf.status == 403 and no_csrf.json()["detail"] == {"field": "csrf"}
    after = site.client.services.pipelines.deployment("fraud")
    assert after is not None and before is not None and after.version == before.version


def test_an_editor_rolls_back_and_the_next_inference_answers_with_the_previous_version(page: Any, site: Site) -> None:
    serving = site.infer().headers["finalmile-pipeline-version"]
    log_in(page, site, "editor")
    page.goto(f"{site.url}/ui/pipelines/fraud")
    shoot(page, "pipeline-editor")
    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.click("button:has-text('Roll back')")
    page.wait_for_selector(".notice.ok")
    assert asked and "Roll fraud back" in asked[0]
    assert f"rolled fraud back from version {serving} to {int(serving) - 1}" in page.inner_text(".notice.ok")
    assert site.infer().headers["finalmile-pipeline-version"] == str(int(serving) - 1)
    history = page.inner_text("#history")
    assert "rollback" in history and "eddie" in history  # in the audit trail, under the editor's name
