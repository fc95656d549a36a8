"""Guardrail steps: personal data redacted, blocked words refused with OpenAI's finish reason, every match flagged
as a check, and a pattern RE2 cannot compile refused with the definition."""

from __future__ import annotations

import pyarrow as pa
import pytest

from finalmile.errors import PipelineDefinitionError
from finalmile.pipelines.batch import Batch
from finalmile.pipelines.executor import build
from finalmile.pipelines.spec import PipelineSpec

TEXTS = [
    "write to jane.doe@example.com today",
    "my card is 4111 1111 1111 1111, thanks",
    "call +1 555-010-0199 please",
    "nothing to see here",
    None,
]


def _run(step: dict) -> Batch:  # type: ignore[type-arg]
    spec = PipelineSpec.from_dict({"name": "g", "steps": [step | {"kind": "guardrail"}]})
    steps = build(spec, lambda ref: None)  # type: ignore[arg-type,return-value]
    table = pa.table({"completion": TEXTS, "finish_reason": ["stop"] * len(TEXTS)})
    return steps.run(Batch.start(table, None))


def test_personal_data_is_redacted_and_flagged() -> None:
    out = _run({"name": "pii", "pii": ["email", "card", "phone"], "action": "redact"})
    assert out.table.column("completion").to_pylist() == [
        "write to [redacted] today",
        "my card is [redacted], thanks",
        "call [redacted] please",
        "nothing to see here",
        None,
    ]
    assert out.checks["pii"].tolist() == [True, True, True, False, False]


def test_blocked_words_refuse_the_row_with_the_content_filter_reason() -> None:
    out = _run({"name": "words", "blocked_words": ["CARD", "today"], "action": "refuse", "refusal": "No."})
    assert out.table.column("completion").to_pylist() == ["No.", "No.", TEXTS[2], TEXTS[3], None]
    assert out.table.column("finish_reason").to_pylist() == ["content_filter"] * 2 + ["stop"] * 3


def test_flag_only_changes_nothing_and_bad_rules_are_refused_up_front() -> None:
    out = _run({"name": "mail", "patterns": [r"@\w+\."]})
    assert out.table.column("completion").to_pylist() == TEXTS and out.checks["mail"].tolist()[0]
    with pytest.raises(PipelineDefinitionError, match="RE2"):
        _run({"name": "bad", "patterns": ["(?<=look)behind"]})
    with pytest.raises(PipelineDefinitionError, match="needs patterns"):
        _run({"name": "empty"})
