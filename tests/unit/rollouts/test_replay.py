"""Replay: logged traffic through a candidate — figures equal to the candidate called directly on the same rows,
agreement and PSI recomputed here by hand, the same figures for the same sample and seed, bad input refused before
anything runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier

from finalmile.errors import InvalidInputError, ModelNotFound
from tests.fixtures import tabular

X, y = tabular(600)


def _served(client):  # type: ignore[no-untyped-def]
    client.upload_model("m", RandomForestClassifier(20, max_depth=5, random_state=0).fit(X, y), sample=X.head(50))
    noisy = np.where(np.arange(len(y)) % 5 == 0, 1 - y, y)  # a candidate that learned from noisier labels
    client.upload_model("m", RandomForestClassifier(20, max_depth=3, random_state=1).fit(X, noisy), sample=X.head(50))
    pipeline = client.build_pipeline("p").add_model_step("m:1").add_check("high", "out.score > 0.7")
    pipeline.deploy()
    for start in range(0, 300, 30):
        pipeline.infer(X.iloc[start : start + 30])
    return pipeline


def _psi_by_hand(served: np.ndarray, candidate: np.ndarray) -> float:
    edges = np.linspace(0, 1, 11)  # probabilities: ten equal bins

    def shares(values: np.ndarray) -> np.ndarray:
        index = np.searchsorted(edges, values, side="right")
        index[values == edges[-1]] = len(edges) - 1
        counts = np.bincount(index, minlength=len(edges) + 1)
        return np.maximum(counts / counts.sum(), 1e-4)

    p, q = shares(served), shares(candidate)
    return float(np.sum((q - p) * np.log(q / p)))


def test_a_replay_is_the_candidate_on_the_logged_rows_compared_with_what_was_served(client) -> None:  # type: ignore[no-untyped-def]
    pipeline = _served(client)
    replayed = pipeline.replay("m:2", segment_by="check_high")
    assert (replayed.status, replayed.rows, replayed.candidate) == ("finished", 300, "m:2")
    s = replayed.summary
    assert (s["score"], s["label"]) == ("score", "label")

    logged = client.query("SELECT * FROM logs WHERE pipeline = 'p'")
    inputs = logged[[f"in_{c}" for c in X.columns]].rename(columns=lambda c: c[3:])
    direct = client.model("m:2").predict(inputs)
    rows = client.replay_rows(replayed.id, limit=None).to_pandas()
    merged = logged.assign(d_score=direct.score.to_numpy(), d_label=direct.label.astype(str).to_numpy()).merge(
        rows, on=["request_id", "row"]
    )
    assert len(merged) == 300
    np.testing.assert_allclose(merged.candidate_score, merged.d_score, atol=1e-5)  # row for row
    assert (merged.candidate_label == merged.d_label).all()

    agreement = float((logged.out_label.astype(str).to_numpy() == direct.label.astype(str).to_numpy()).mean())
    assert s["agreement"] == pytest.approx(agreement)
    assert s["psi"] == pytest.approx(_psi_by_hand(logged.out_score.to_numpy(), direct.score.to_numpy()))
    difference = direct.score.to_numpy() - logged.out_score.to_numpy()
    assert s["difference"]["mean"] == pytest.approx(difference.mean())
    assert s["difference"]["p50"] == pytest.approx(np.quantile(difference, 0.5))
    assert s["checks"]["high"]["candidate"] == pytest.approx(float((direct.score > 0.7).mean()))
    assert sum(sum(s["histogram"][arm]) for arm in ("served", "candidate")) == 600
    assert sum(f["rows"] for f in s["segments"].values()) == 300 and set(s["segments"]) == {"true", "false"}
    assert client.query("SELECT rows, psi FROM replays").to_dict("records") == [{"rows": 300, "psi": s["psi"]}]


def test_the_same_sample_and_seed_give_the_same_figures_and_labels_score_both_arms(client) -> None:  # type: ignore[no-untyped-def]
    pipeline = _served(client)
    assert pipeline.clear().add_model_step("m:2").add_check("high", "out.score > 0.7").create_version().version == 2
    first = pipeline.replay(2, sample=0.5, seed=7)  # a pipeline version as the candidate
    again = pipeline.replay(2, sample=0.5, seed=7)
    other = pipeline.replay(2, sample=0.5, seed=8)
    assert 100 < first.rows < 200 and first.summary["psi"] == again.summary["psi"] and first.rows == again.rows

    def sampled(replay_id: int) -> set[tuple[str, int]]:  # rows, not requests: each request holds 30 rows, so a
        # half of the rows touches all ten requests, and two seeds' counts are equal ~5% of the time
        rows = client.replay_rows(replay_id, None)
        return set(zip(rows.column("request_id").to_pylist(), rows.column("row").to_pylist(), strict=True))

    assert sampled(first.id) == sampled(again.id) and sampled(first.id) != sampled(other.id)

    ids = client.query("SELECT DISTINCT request_id FROM logs WHERE pipeline = 'p'").request_id.tolist()
    pipeline.add_ground_truth(pd.DataFrame({"request_id": ids[:5], "is_fraud": [1, 0, 1, 0, 1]}))
    quality = pipeline.replay("m:2").summary["quality"]
    assert quality["metric"] == "accuracy" and quality["label"] == "is_fraud" and quality["rows"] == 150
    assert 0 <= quality["served"] <= 1 and 0 <= quality["candidate"] <= 1


def test_bad_input_names_the_field_and_starts_nothing(client) -> None:  # type: ignore[no-untyped-def]
    pipeline = _served(client)
    with pytest.raises(ModelNotFound):
        pipeline.replay("nope:1")
    with pytest.raises(InvalidInputError, match="sample"):
        pipeline.replay("m:2", sample=2.0)
    with pytest.raises(InvalidInputError, match="segment_by"):
        pipeline.replay("m:2", segment_by="nope")
    with pytest.raises(InvalidInputError, match="label"):
        pipeline.replay("m:2", label="nope")
    assert client.replays() == []


def test_the_cli_replays_and_shows_the_figures(cli_env, capsys) -> None:  # type: ignore[no-untyped-def]
    from finalmile import Client
    from tests.unit.cli.test_cli import run

    with Client() as client:
        _served(client)
    code, out, err = run(capsys, "replay", "p", "m:2", "--since", "1d", "--segment-by", "check_high")
    assert code == 0, err
    assert "replay 1 of p through m:2: finished" in out and "300" in out and "PSI" in out and "per segment" in out
    assert run(capsys, "replays", "list")[0] == 0
    code, out, _ = run(capsys, "replays", "show", "1")
    assert code == 0 and "replay 1 of p through m:2: finished" in out
    code, out, _ = run(capsys, "replays", "rows", "1", "--output", str(cli_env / "rows.csv"))
    assert code == 0 and pd.read_csv(cli_env / "rows.csv").shape[0] == 300
    code, _, err = run(capsys, "replay", "p", "m:2", "--sample", "3")
    assert code == 1 and "sample" in err and "Traceback" not in err


def test_the_dashboard_shows_a_replay_as_people_read_it(client) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    import httpx

    from finalmile.http.server import create_app

    replayed = _served(client).replay("m:2")
    token = client.services.init_access()[1]
    app = create_app(client.services, auth=True, background=False)

    async def pages() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            await http.post("/ui/login", data={"token": token, "next": "/ui"})
            return (
                await http.get(f"/ui/replays/{replayed.id}"),
                await http.get("/ui/pipelines/p"),
                await http.get("/ui/replays/999"),
            )

    page, pipeline, missing = asyncio.run(pages())
    assert page.status_code == 200, page.text
    assert "Where they disagree most" in page.text and 'id="replay-histogram"' in page.text
    assert f"{replayed.summary['agreement']:.1%} of rows" in page.text
    assert f'href="/ui/replays/{replayed.id}"' in pipeline.text
    assert missing.status_code == 404
