"""The OpenAI surface's request checks: every refusal is a 400 naming the field (OpenAI's `param`), and text may
stream as it is decoded only where nothing after the generative model changes it."""

from __future__ import annotations

import pytest

from finalmile.errors import BadRequestError
from finalmile.pipelines.spec import PipelineSpec
from finalmile.serving import openai as oai


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"model": "m", "messages": []}', "messages"),
        (b'{"model": "m", "messages": [{"role": "wizard", "content": "hi"}]}', "messages.0.role"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 3}', "temperature"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 2}', "n"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}', "max_tokens"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
        (b"not json", "body"),
    ],
)
def test_a_bad_chat_request_names_its_field(body: bytes, field: str) -> None:
    with pytest.raises(BadRequestError) as refused:
        oai.parse(oai.ChatRequest, body)
    assert refused.value.detail["field"] == field


def test_chat_rows_carry_the_messages_and_options() -> None:
    call = oai.parse(
        oai.ChatRequest,
        b'{"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],'
        b' "max_completion_tokens": 7, "temperature": 0, "presence_penalty": 1}',
    )
    table = oai.prompt_table([call.rows()])
    assert table.column("messages")[0].as_py() == '[{"role":"user","content":"hi"}]'
    assert table.column("max_tokens")[0].as_py() == 7 and table.column("temperature")[0].as_py() == 0.0
    with pytest.raises(BadRequestError, match="one prompt"):
        oai.completion_rows(oai.parse(oai.CompletionRequest, b'{"model": "m", "prompt": ["a", "b"], "stream": true}'))


def test_text_streams_as_decoded_only_when_nothing_after_the_model_changes_it() -> None:
    def steps(*extra: dict) -> list:  # type: ignore[type-arg]
        return list(PipelineSpec.from_dict({"name": "p", "steps": [{"model": "lm:1"}, *extra]}).steps)

    generative = {"lm:1": True, "post:1": False}.__getitem__
    assert oai.streams_text(steps(), generative)
    assert oai.streams_text(steps({"kind": "check", "name": "c", "expression": "out.tokens_out > 3"}), generative)
    assert oai.streams_text(steps({"kind": "guardrail", "name": "g", "pii": ["email"]}), generative)
    assert not oai.streams_text(steps({"kind": "guardrail", "name": "g", "pii": ["email"], "action": "redact"}),
                                generative)  # fmt: skip
    assert not oai.streams_text(steps({"model": "post:1"}), generative)
