"""Progressive rollouts, embedded, on SQLite and PostgreSQL: each bad candidate rolled back with its reason, a good
one promoted through every step with its alias moved, holds that never pass silently, a person's actions, and bad
input refused before anything is deployed."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

from finalmile.errors import ConflictError, FinalmileError, InvalidInputError, ModelNotFound
from tests.fixtures import FlakyClassifier, SlowClassifier, tabular

X, y = tabular(2000)
EVERY = 0.05


def _champion(client):  # type: ignore[no-untyped-def]
    client.upload_model("m", RandomForestClassifier(20, max_depth=5, random_state=0).fit(X, y), sample=X.head(50))
    pipeline = client.build_pipeline("p").add_model_step("m:1")
    pipeline.deploy()
    return pipeline


def _traffic(pipeline, requests: int = 120, start: int = 0, rows: int = 1) -> int:  # type: ignore[no-untyped-def]
    """Requests of `rows` rows; how many failed."""
    failed = 0
    for i in range(start, start + requests):
        try:
            at = i * rows % (len(X) - rows)
            pipeline.infer(X.iloc[at : at + rows])
        except FinalmileError:
            failed += 1
    return failed


def _step(client, pipeline, requests: int = 120, start: int = 0, rows: int = 1):  # type: ignore[no-untyped-def]
    """Serve a step's traffic, wait for the step to end, judge it; the rollout after."""
    _traffic(pipeline, requests, start, rows)
    time.sleep(EVERY)
    client.run_rollouts()
    return client.rollouts("p")[-1]


def _deployed(client) -> int:  # type: ignore[no-untyped-def]
    return next(d["version"] for d in client.deployments() if d["name"] == "p")


def _spec(client, version: int):  # type: ignore[no-untyped-def]
    return next(v.spec for v in client.pipeline_versions("p") if v.version == version)


def test_a_good_candidate_is_promoted_through_every_step_and_its_alias_moves(client) -> None:  # type: ignore[no-untyped-def]
    pipeline = _champion(client)
    retrained = RandomForestClassifier(20, max_depth=5, random_state=0).fit(X.iloc[:1900], y.iloc[:1900])
    client.upload_model("m", retrained)
    started = pipeline.rollout("m:2", steps=[20, 50, 100], step_every=EVERY, min_rows=10)
    assert (started.state, started.step, started.weight) == ("running", 0, 20.0)
    split = _spec(client, _deployed(client))["steps"][0]
    assert [(v["name"], v["weight"]) for v in split["variants"]] == [("champion", 80.0), ("candidate", 20.0)]

    for k, share in enumerate([50.0, 100.0]):
        after = _step(client, pipeline, requests=400, start=400 * k, rows=8)
        assert (after.state, after.step, after.weight) == ("running", k + 1, share), after.reason
    promoted = _step(client, pipeline, requests=100, start=800, rows=8)
    assert promoted.state == "promoted" and promoted.settled
    assert _spec(client, _deployed(client))["steps"] == [{"kind": "model", "model": "m:2"}]
    assert client.model("m@champion").version == 2

    events = client.rollout_run(promoted.id).events
    assert [e.decision for e in events] == ["start", "advance", "advance", "promote"]
    gates = {g["gate"]: g for g in events[1].evidence["gates"]}
    assert set(gates) == {"error_rate", "latency_p99", "score PSI (out_score)"}
    assert gates["error_rate"]["champion"] == gates["error_rate"]["candidate"] == 0.0
    assert events[1].evidence["rows"]["champion"] > events[1].evidence["rows"]["candidate"] >= 10
    audit = client.audit("pipeline p")
    assert any(a["action"] == "rollout advance" and "error_rate" in a["after"] for a in audit.to_dict("records"))

    client.control_rollout(promoted.id, "rollback")  # one call brings the champion back
    assert _deployed(client) == 1


def test_a_candidate_that_errs_on_a_fifth_of_rows_is_rolled_back(client) -> None:  # type: ignore[no-untyped-def]
    pipeline = _champion(client)
    client.upload_model("m", FlakyClassifier().fit(X, y))
    rollout = pipeline.rollout("m:2", steps=[50, 100], step_every=EVERY, min_rows=20)
    after = _step(client, pipeline, requests=200)
    assert after.state == "rolled_back" and after.weight == 0.0
    assert after.reason.startswith("error_rate: champion 0, candidate 0.")
    assert _deployed(client) == 1
    errors = client.query("SELECT variant, count(*) AS n FROM logs WHERE status = 'error' GROUP BY 1")
    assert errors.variant.tolist() == ["candidate"]  # the champion's rows in a failed batch were answered
    alerts = client.alerts()
    assert any("rolled back" in str(d) for d in alerts.evidence)
    assert client.rollout_run(rollout.id).events[-1].evidence["gates"][0]["passed"] is False


def test_a_slower_candidate_and_one_whose_scores_shift_are_rolled_back(client) -> None:  # type: ignore[no-untyped-def]
    pipeline = _champion(client)
    client.upload_model("m", SlowClassifier().fit(X, y))
    slow = pipeline.rollout("m:2", steps=[50, 100], step_every=EVERY, min_rows=10, gates=["latency_p99"])
    after = _step(client, pipeline, requests=60)
    assert after.state == "rolled_back" and after.reason.startswith("latency_p99: champion"), after.reason
    p99 = client.rollout_run(slow.id).events[-1].evidence["gates"][0]
    assert p99["candidate"] > p99["champion"] + 30  # its own arm's time, not the batch's

    rare = (X.x0 + 0.5 * X.x1 > 1.2).astype(int)  # trained where positives are rare: its scores fall
    client.upload_model("m", RandomForestClassifier(20, max_depth=5, random_state=0).fit(X, rare))
    pipeline.rollout("m:3", steps=[50, 100], step_every=EVERY, min_rows=10, gates=["score_psi"])
    after = _step(client, pipeline, requests=120, start=300)
    assert after.state == "rolled_back" and after.reason.startswith("score PSI (out_score): champion 0, candidate")


def test_no_traffic_holds_then_pauses_and_a_missing_figure_never_advances(client) -> None:  # type: ignore[no-untyped-def]
    pipeline = _champion(client)
    client.upload_model("m", RandomForestClassifier(20, max_depth=5, random_state=1).fit(X, y))
    rollout = pipeline.rollout(
        "m:2", steps=[50, 100], step_every=EVERY, min_rows=10, hold_alert_after=2,
        gates=["error_rate", {"kind": "performance", "metric": "accuracy", "label": "y"}],
    )  # fmt: skip
    time.sleep(EVERY)
    held = client.run_rollouts()[0]
    assert (held.state, held.holds) == ("running", 1) and held.reason.startswith("too few rows to judge: champion 0")
    _traffic(pipeline, 80)  # rows now, but no labels have arrived: the accuracy is missing
    time.sleep(EVERY)
    paused = client.run_rollouts()[0]
    assert paused.state == "paused" and paused.reason.startswith("performance accuracy: no figure")
    assert [e.decision for e in client.rollout_run(rollout.id).events] == ["start", "hold", "hold"]
    assert any("held 2 times" in str(d) for d in client.alerts().evidence)
    time.sleep(EVERY)
    assert client.run_rollouts() == []  # a paused rollout is not judged

    resumed = client.control_rollout(rollout.id, "resume")
    assert resumed.state == "running" and resumed.holds == 0
    with pytest.raises(ConflictError, match="is running: it cannot resume"):
        client.control_rollout(rollout.id, "resume")
    aborted = client.control_rollout(rollout.id, "abort")
    assert aborted.state == "aborted" and _deployed(client) == 1


def test_bad_input_is_refused_naming_the_field_and_starts_nothing(client) -> None:  # type: ignore[no-untyped-def]
    pipeline = _champion(client)
    client.upload_model("m", RandomForestClassifier(20, max_depth=5, random_state=1).fit(X, y))
    bad = [
        ({"candidate": "nope:1"}, ModelNotFound, "nope"),
        ({"steps": [50, 25]}, InvalidInputError, "steps: must increase"),
        ({"steps": [0, 100]}, InvalidInputError, "steps"),
        ({"gates": ["telepathy"]}, InvalidInputError, "gates"),
        ({"gates": [{"kind": "drift", "column": "in_x0"}]}, InvalidInputError, "baseline"),
        ({"step_every": "soon"}, InvalidInputError, "step_every"),
        ({"on_hold": "panic"}, InvalidInputError, "on_hold"),
        ({"candidate": "m:1"}, InvalidInputError, "serves already"),
    ]
    for change, error, said in bad:
        args = {"candidate": "m:2"} | change
        with pytest.raises(error, match=said) as raised:
            pipeline.rollout(args.pop("candidate"), **args)
        if isinstance(raised.value, InvalidInputError):
            assert raised.value.detail and "field" in str(raised.value.detail)
    assert client.rollouts() == [] and _deployed(client) == 1

    reference = X.assign(label=y)  # the label-free estimate of the next issue gates like any monitor kind
    gates = ["error_rate", {"kind": "estimated_performance", "metric": "accuracy", "reference": reference}]
    first = pipeline.rollout("m:2", steps=[50, 100], step_every="1h", min_rows=10, key="x0", gates=gates)
    assert [g["name"] for g in first.plan["gates"]] == ["error_rate", "estimated_performance"]
    assert _spec(client, _deployed(client))["steps"][0]["key"] == "x0"  # one customer, one arm
    with pytest.raises(ConflictError, match=f"rollout {first.id} of 'p' is running"):
        pipeline.rollout("m:2")
    with pytest.raises(InvalidInputError, match="action"):
        client.control_rollout(first.id, "explode")
    assert client.run_rollouts(datetime.now(UTC) + timedelta(minutes=5)) == []  # not due for an hour
    np.testing.assert_array_equal(client.rollouts()[0].plan["steps"], [50.0, 100.0])


def test_the_dashboard_shows_the_timeline_and_gates_and_editors_steer_it(client) -> None:  # type: ignore[no-untyped-def]
    import asyncio
    import re

    import httpx

    from finalmile.http.server import create_app

    pipeline = _champion(client)
    client.upload_model("m", RandomForestClassifier(20, max_depth=5, random_state=0).fit(X, y))
    rollout = pipeline.rollout("m:2", steps=[50, 100], step_every=EVERY, min_rows=10_000, hold_alert_after=5)
    _step(client, pipeline, requests=30)  # held: too few rows
    token = client.services.init_access()[1]
    app = create_app(client.services, auth=True, background=False)

    async def browse() -> tuple[httpx.Response, ...]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            await http.post("/ui/login", data={"token": token, "next": "/ui"})
            page = await http.get(f"/ui/rollouts/{rollout.id}")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
            paused = await http.post(f"/ui/rollouts/{rollout.id}/pause", data={"csrf": csrf})
            again = await http.post(f"/ui/rollouts/{rollout.id}/pause", data={"csrf": csrf})
            after = await http.get(f"/ui/rollouts/{rollout.id}")
            return page, paused, again, after, await http.get("/ui/pipelines/p"), await http.get("/ui/rollouts/99")

    page, paused, again, after, pipeline_page, missing = asyncio.run(browse())
    assert page.status_code == 200, page.text
    assert 'id="rollout-traffic"' in page.text and "too few rows to judge" in page.text
    assert "Pause rollout" in page.text and "Promote now" in page.text and "Abort" in page.text
    assert paused.status_code == 303 and "paused" in paused.headers["location"]
    assert "error=" in again.headers["location"] and "cannot+pause" in again.headers["location"]
    assert "<b>paused</b>" in after.text and "Resume rollout" in after.text
    assert f'href="/ui/rollouts/{rollout.id}"' in pipeline_page.text and missing.status_code == 404
    assert client.rollout_run(rollout.id).events[-1].actor != "rollout 1"  # the person who pressed it


def test_the_cli_starts_shows_and_steers_a_rollout(cli_env, capsys) -> None:  # type: ignore[no-untyped-def]
    from finalmile import Client
    from tests.unit.cli.test_cli import run

    with Client() as client:
        pipeline = _champion(client)
        client.upload_model("m", RandomForestClassifier(20, max_depth=5, random_state=0).fit(X, y))
        _traffic(pipeline, 5)
    gate = '{"kind": "error_rate", "margin": 0.05}'
    code, out, err = run(capsys, "rollout", "p", "m:2", "--steps", "10,50,100", "--every", "1h", "--gate", gate)
    assert code == 0, err
    assert "rollout 1 of p: m:2 is running at 10% (step 1 of 3: 10%, 50%, 100%)" in out
    code, out, _ = run(capsys, "rollouts", "list")
    assert code == 0 and "m:2" in out and "running" in out
    code, out, _ = run(capsys, "rollouts", "control", "1", "abort")
    assert code == 0 and "aborted" in out
    code, out, _ = run(capsys, "rollouts", "show", "1")
    assert code == 0 and "start" in out and "abort" in out
    code, out, _ = run(capsys, "rollouts", "run")
    assert code == 0 and "0 rollout(s) moved" in out
    code, _, err = run(capsys, "rollout", "p", "m:2", "--steps", "10,x")
    assert code == 1 and "--steps" in err and "Traceback" not in err
    code, _, err = run(capsys, "rollout", "p", "m:2", "--gate", "{oops")
    assert code == 1 and "--gate" in err and "Traceback" not in err
    code, _, err = run(capsys, "rollouts", "control", "1", "resume")
    assert code == 1 and "aborted" in err and "Traceback" not in err
