"""Monitors of a generative pipeline from its log: p99 time to first token, median output tokens/s, drift of output
and prompt length, and the rate of a flagging guardrail (a check like any other)."""

from __future__ import annotations

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
