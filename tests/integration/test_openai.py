"""Generative models behind the OpenAI-compatible surface of a real `finalmile serve`, driven by the official `openai`
client unchanged: chat and text completions, streamed and not, embeddings, concurrent calls decoded together, every
call logged with exact token counts, a guardrail refusing, a prompt past the context refused, and the same tokens
and permissions as every route. The models are tiny and made here (`tests/fixtures.py`): nothing is downloaded."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from finalmile import Client
from finalmile.errors import Forbidden
from tests.fixtures import gpt2_to_gguf, mean_pooled, tiny_language_models

pytest.importorskip("transformers")


def _served(tmp_path: Path, server_factory):  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    causal, encoder = tiny_language_models(tmp_path / "models")
    with Client(home=home) as client:
        client.upload_model("lm", causal)
        client.upload_model("encoder", encoder)
        client.build_pipeline("chat").add_model_step("lm:1").deploy(max_batch_size=16, max_delay_ms=20)
        client.build_pipeline("embed").add_model_step("encoder:1").deploy()
        guarded = client.build_pipeline("guarded").add_model_step("lm:1")
        guarded.add_guardrail("anything", patterns=["."], action="refuse", refusal="No.").deploy()
        _, owner = client.services.init_access("alice")
        client.services.set_member("victor", "default", "viewer")
        _, viewer = client.services.create_token("victor", "default", "viewer", "reader")
    server = server_factory(home, auth=True)
    return server, owner, viewer, causal


def _logged(server, owner: str, sql: str, rows: int):  # type: ignore[no-untyped-def]
    with Client(url=server.url, token=owner) as remote:
        deadline = time.monotonic() + 20
        while True:
            frame = remote.query(sql)
            if len(frame) >= rows or time.monotonic() > deadline:
                return frame
            time.sleep(0.3)


def test_the_openai_client_chats_streams_embeds_and_is_logged(tmp_path: Path, server_factory, request) -> None:  # type: ignore[no-untyped-def]
    server, owner, viewer, _ = _served(tmp_path, server_factory)
    ai = openai.OpenAI(base_url=f"{server.url}/v1", api_key=viewer, max_retries=0)
    request.addfinalizer(ai.close)

    assert {m.id for m in ai.models.list()} == {"chat", "embed", "guarded"}
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello world"}]
    answer = ai.chat.completions.create(model="chat", messages=messages, max_tokens=6, temperature=0)
    text = answer.choices[0].message.content
    assert isinstance(text, str) and answer.choices[0].finish_reason in ("stop", "length")
    assert answer.model == "chat" and answer.usage is not None and 1 <= answer.usage.completion_tokens <= 6

    # streamed: the same text (greedy), in pieces, ending with the finish reason and the usage asked for
    chunks = list(
        ai.chat.completions.create(
            model="chat", messages=messages, max_tokens=6, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == text and len(pieces) >= 2
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == answer.choices[0].finish_reason
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == answer.usage.completion_tokens

    # text completions: one choice per prompt, the legacy endpoint's default of 16 tokens at most
    many = ai.completions.create(model="chat", prompt=["the quick brown", "hello"], temperature=0)
    assert [c.index for c in many.choices] == [0, 1] and many.usage.completion_tokens <= 32
    streamed = "".join(c.choices[0].text for c in ai.completions.create(
        model="chat", prompt="the quick brown", temperature=0, stream=True))  # fmt: skip
    assert streamed == many.choices[0].text

    # embeddings: the client's default base64 encoding and plain floats agree; vectors are unit length
    vectors = ai.embeddings.create(model="embed", input=["hello", "the quick brown fox"])
    floats = httpx.post(f"{server.url}/v1/embeddings", headers={"authorization": f"Bearer {viewer}"},
                        json={"model": "embed", "input": "hello", "encoding_format": "float"}).json()  # fmt: skip
    first = np.array(vectors.data[0].embedding)
    assert len(vectors.data) == 2 and first.shape == (32,) and abs(np.linalg.norm(first) - 1) < 1e-5
    np.testing.assert_allclose(first, floats["data"][0]["embedding"], atol=1e-6)  # batched or alone

    # every call logged: messages, completion, versions, exact token counts, time to first token
    logged = _logged(server, owner, "SELECT * FROM logs WHERE pipeline = 'chat' ORDER BY time", 5)
    assert len(logged) == 5  # chat, streamed chat, two prompts, one streamed prompt
    assert json.loads(logged.in_messages[0]) == messages and logged.out_completion[0] == text
    assert list(logged.out_tokens_out[:2]) == [answer.usage.completion_tokens] * 2
    assert int(logged.out_tokens_in[0]) == answer.usage.prompt_tokens and logged.model_versions[0] == "lm:1"
    assert (logged.out_ttft_ms > 0).all() and (logged.out_tokens_per_s > 0).all()
    assert logged.in_stream_id[0] is None or logged.in_stream_id[0] != logged.in_stream_id[0]  # NaN: not streamed
    assert isinstance(logged.in_stream_id[1], str)


def test_concurrent_calls_are_decoded_together_and_answer_as_alone(tmp_path: Path, server_factory, request) -> None:  # type: ignore[no-untyped-def]
    server, owner, viewer, _ = _served(tmp_path, server_factory)
    ai = openai.OpenAI(base_url=f"{server.url}/v1", api_key=viewer, max_retries=0)
    request.addfinalizer(ai.close)
    prompts = [f"hello {word}" for word in "the quick brown fox jumps over the lazy dog world how are".split()]

    def call(prompt: str) -> str:
        done = ai.completions.create(model="chat", prompt=prompt, max_tokens=8, temperature=0)
        return str(done.choices[0].text)

    alone = [call(p) for p in prompts]
    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(call, prompts))
    assert together == alone  # left-padded batches decode each row as it decodes alone

    metrics = httpx.get(f"{server.url}/metrics", headers={"authorization": f"Bearer {owner}"}).text
    batches = {
        (sample.name, sample.labels.get("le")): sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if family.name == "finalmile_batch_requests" and sample.labels.get("pipeline") == "chat"
    }
    one, total = batches[("finalmile_batch_requests_bucket", "1.0")], batches[("finalmile_batch_requests_count", None)]
    assert one < total  # some batches held several requests


def test_refusals_errors_and_permissions_in_openai_shape(tmp_path: Path, server_factory, request) -> None:  # type: ignore[no-untyped-def]
    server, owner, viewer, causal = _served(tmp_path, server_factory)
    ai = openai.OpenAI(base_url=f"{server.url}/v1", api_key=viewer, max_retries=0)
    request.addfinalizer(ai.close)
    hello = [{"role": "user", "content": "hello"}]

    refused = ai.chat.completions.create(model="guarded", messages=hello, max_tokens=4, temperature=0)
    assert refused.choices[0].message.content == "No." and refused.choices[0].finish_reason == "content_filter"
    streamed = list(ai.chat.completions.create(model="guarded", messages=hello, max_tokens=4, stream=True))
    # a step after the model sees the whole text first: only the refusal ever leaves
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "No."

    with pytest.raises(openai.BadRequestError) as too_long:
        ai.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hello world " * 100}])
    assert "maximum context length is 128 tokens" in too_long.value.message
    assert too_long.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as streamed_too_long:  # refused before any event is sent
        ai.completions.create(model="chat", prompt="hello world " * 100, stream=True)
    assert "maximum context length" in streamed_too_long.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        ai.chat.completions.create(model="chat", messages=hello, temperature=7)
    assert bad.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as empty:
        ai.chat.completions.create(model="chat", messages=[])
    assert empty.value.param == "messages"
    with pytest.raises(openai.NotFoundError) as unknown:
        ai.chat.completions.create(model="nope", messages=hello)
    assert "nope" in unknown.value.message
    with pytest.raises(openai.BadRequestError) as not_text:
        ai.embeddings.create(model="chat", input="hello")
    assert not_text.value.param == "model"
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="fm_wrong", max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()

    # a viewer may infer (above) but not upload
    with Client(url=server.url, token=viewer) as remote, pytest.raises(Forbidden):
        remote.upload_model("lm", causal)
    with Client(url=server.url, token=owner) as remote:
        assert remote.upload_model("lm", causal).version == 2


def test_a_gguf_model_answers_the_openai_client_as_its_twin(tmp_path: Path, server_factory, request) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("llama_cpp")
    server, owner, viewer, causal = _served(tmp_path, server_factory)
    gguf = gpt2_to_gguf(causal, tmp_path / "tiny.gguf")
    with Client(url=server.url, token=owner) as remote:  # uploaded to the server: loaded in its upload sandbox
        version = remote.upload_model("lm-gguf", gguf)
        assert (version.framework, version.task) == ("gguf", "text-generation")
        remote.build_pipeline("chat-gguf").add_model_step("lm-gguf:1").deploy(max_batch_size=16, workers=4)
    with Client(url=server.url, token=viewer) as remote, pytest.raises(Forbidden):
        remote.upload_model("lm-gguf", gguf)
    pooled = gpt2_to_gguf(causal, tmp_path / "pooled.gguf", pooling=True)  # a GGUF embedding model
    with Client(url=server.url, token=owner) as remote:
        version = remote.upload_model("embed-gguf", pooled)
        assert (version.framework, version.task) == ("gguf", "embedding")
        remote.build_pipeline("embed-gguf").add_model_step("embed-gguf:1").deploy()
    ai = openai.OpenAI(base_url=f"{server.url}/v1", api_key=viewer, max_retries=0)
    request.addfinalizer(ai.close)

    # embeddings from the GGUF file: the mean of GPT-2's last hidden states, as transformers computes them
    texts = ["hello", "the quick brown fox"]
    vectors = np.array([d.embedding for d in ai.embeddings.create(model="embed-gguf", input=texts).data])
    np.testing.assert_allclose(vectors, mean_pooled(causal, texts), atol=1e-4)
    with pytest.raises(openai.BadRequestError) as too_long:
        ai.embeddings.create(model="embed-gguf", input="hello world " * 100)
    assert "maximum context length is 128 tokens" in too_long.value.message

    messages = [{"role": "user", "content": "hello world"}]
    answers = {
        model: ai.chat.completions.create(model=model, messages=messages, max_tokens=6, temperature=0)
        for model in ("chat", "chat-gguf")
    }
    text = answers["chat-gguf"].choices[0].message.content
    assert text and text == answers["chat"].choices[0].message.content  # the same model, the same greedy answer
    assert answers["chat-gguf"].usage == answers["chat"].usage
    chunks = list(ai.chat.completions.create(model="chat-gguf", messages=messages, max_tokens=6, temperature=0,
                                             stream=True))  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    with ThreadPoolExecutor(4) as pool:  # concurrent calls share batches: each answered as alone
        together = list(pool.map(lambda p: ai.completions.create(model="chat-gguf", prompt=p, max_tokens=5,
                                                                 temperature=0).choices[0].text,
                                 ["hello", "the quick", "world", "fox"]))  # fmt: skip
    alone = [ai.completions.create(model="chat", prompt=p, max_tokens=5, temperature=0).choices[0].text
             for p in ["hello", "the quick", "world", "fox"]]  # fmt: skip
    assert together == alone
    with pytest.raises(openai.BadRequestError) as too_long:
        ai.completions.create(model="chat-gguf", prompt="hello world " * 100)
    assert "maximum context length is 128 tokens" in too_long.value.message

    logged = _logged(server, owner, "SELECT out_tokens_in, out_tokens_out, out_completion FROM logs "
                                    "WHERE pipeline = 'chat-gguf' AND out_error IS NULL ORDER BY time", 6)  # fmt: skip
    usage = answers["chat-gguf"].usage
    assert usage is not None
    first = logged.iloc[0]
    assert (first.out_tokens_in, first.out_tokens_out, first.out_completion) == (
        usage.prompt_tokens,
        usage.completion_tokens,
        text,
    )
