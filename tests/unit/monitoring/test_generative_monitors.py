"""Monitors of a generative pipeline from its log: p99 time to first token, median output tokens/s, drift of output
and prompt length, and the rate of a flagging guardrail (a check like any other)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("transformers")

from finalmile import Client  # noqa: E402
from tests.fixtures import tiny_language_models  # noqa: E402


def test_generative_figures_are_monitored_like_any_column(tmp_path: Path) -> None:
    causal, _ = tiny_language_models(tmp_path / "models")
    start = datetime.now(UTC) - timedelta(minutes=1)
    with Client(home=tmp_path / "home") as client:
        client.upload_model("lm", causal)
        pipeline = client.build_pipeline("chat").add_model_step("lm:1").add_guardrail("mail", patterns=["o"])
        pipeline.deploy()
        prompts = [f"hello world {i}" for i in range(12)]
        served = pipeline.infer(pd.DataFrame({"prompt": prompts, "max_tokens": [4] * 12, "temperature": [0.0] * 12}))
        client.services.logs.flush()  # fast durability: on disk within a second; now for the test
        end = start + timedelta(hours=1)
        ttft = client.build_monitor("ttft", "chat", "ttft_p99", window="1h", alert=60_000).preview(start, end)
        rate = client.build_monitor("speed", "chat", "tokens_per_s", window="1h", alert=1e-3).preview(start, end)
        flags = client.build_monitor("mail", "chat", "check_rate", column="mail", window="1h").preview(start, end)
        length = client.build_assay(
            "length", "chat", "out_tokens_out", baseline=np.full(200, 1.0), window="1h", alert=0.25
        ).preview(start, end)
    assert ttft.score.iloc[-1] > 0 and ttft.status.iloc[-1] == "ok" and ttft.rows.iloc[-1] == 12
    assert rate.score.iloc[-1] > 1e-3 and rate.status.iloc[-1] == "ok"  # lower is worse: not crossed
    expected = served.completion.str.contains("o").mean()
    assert flags.score.iloc[-1] == pytest.approx(expected)
    assert length.status.iloc[-1] == "alert"  # 4 tokens a call against a baseline of 1


def test_a_generative_candidate_is_replayed_with_text_comparisons(tmp_path: Path) -> None:
    causal, _ = tiny_language_models(tmp_path / "models")
    with Client(home=tmp_path / "home") as client:
        client.upload_model("lm", causal)
        pipeline = client.build_pipeline("chat").add_model_step("lm:1")
        pipeline.deploy()
        prompts = [f"hello world {i}" for i in range(6)]
        pipeline.infer(pd.DataFrame({"prompt": prompts, "max_tokens": [4] * 6, "temperature": [0.0] * 6}))
        client.services.logs.flush()
        same = pipeline.replay("lm:1").summary
        refuse = {"kind": "guardrail", "name": "all", "patterns": ["."], "action": "refuse", "refusal": "No."}
        refusing = {"name": "chat", "steps": [{"model": "lm:1"}, refuse]}
        refused = pipeline.replay(refusing).summary
    assert same["text"] == "completion" and same["score"] == "tokens_out"
    assert same["exact_match"] == 1.0 and same["difference"]["mean_abs"] == 0.0
    assert refused["exact_match"] == 0.0 and refused["text_length"]["candidate"] == 3.0


def test_a_generative_candidate_rolls_out_judged_on_speed_and_answer_length(tmp_path: Path) -> None:
    causal, _ = tiny_language_models(tmp_path / "models")
    calls = pd.DataFrame({"prompt": [f"hello {i}" for i in range(30)], "max_tokens": [3] * 30})
    with Client(home=tmp_path / "home") as client:
        client.upload_model("lm", causal)
        pipeline = client.build_pipeline("chat").add_model_step("lm:1")
        pipeline.deploy()
        client.upload_model("lm", causal)
        # the speed gates' margins are wide: this asserts that they are judged, not this machine's noise
        gates = [
            "error_rate",
            {"kind": "ttft_p99", "margin": 10},
            {"kind": "tokens_per_s", "margin": 0.95},
            "score_psi",
        ]
        pipeline.rollout("lm:2", steps=[50, 100], step_every=0.05, min_rows=5, gates=gates)
        for _ in range(2):
            for i in range(len(calls)):
                pipeline.infer(calls.iloc[[i]])
            client.services.logs.flush()
            time.sleep(0.05)
            client.run_rollouts()
        rollout = client.rollout_run(client.rollouts("chat")[-1].id)
    assert rollout.state == "promoted", [e.reason for e in rollout.events]
    judged = [g for e in rollout.events for g in e.evidence.get("gates", [])]
    assert {g["gate"] for g in judged} == {"error_rate", "ttft_p99", "tokens_per_s", "score PSI (out_tokens_out)"}
    assert all(g["passed"] and g["champion"] is not None for g in judged)
