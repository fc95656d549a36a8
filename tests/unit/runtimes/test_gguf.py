"""The GGUF runtime (llama.cpp) on a tiny GPT-2 made here and written as GGUF: it answers exactly as the same model
run by transformers (greedy), with the same token counts; rows past the context or with bad messages fail alone; the
file's chat template runs in Jinja's sandbox; a file that is not a GGUF model is refused at upload."""

from __future__ import annotations

import gc
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("transformers")

from finalmile.errors import InvalidModelError, PredictionError  # noqa: E402
from finalmile.runtimes import detect_framework  # noqa: E402
from finalmile.runtimes.generation import SINKS, prompt_table  # noqa: E402
from finalmile.runtimes.gguf import GGUFRuntime, package  # noqa: E402
from finalmile.runtimes.transformers import TransformersRuntime  # noqa: E402
from tests.fixtures import gpt2_to_gguf, mean_pooled, streamed, tiny_language_models  # noqa: E402

ESCAPE = "{{ ().__class__.__base__.__subclasses__() }}"
"""A template that reaches for Python's object graph: the sandbox must stop it."""
REFUSING = (
    "{% if messages|length > 1 %}{{ raise_exception('one message at a time') }}{% endif %}{{ messages[0]['content'] }}"
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the transformers directory, the same model as GGUF)."""
    directory = tmp_path_factory.mktemp("models")
    causal, _ = tiny_language_models(directory)
    return causal, gpt2_to_gguf(causal, directory / "tiny.gguf")


def test_llama_cpp_answers_as_transformers_does_with_the_same_counts(models: tuple[Path, Path]) -> None:
    twin = TransformersRuntime.from_directory(models[0], "text-generation")
    runtime = GGUFRuntime.from_file(models[1])
    prompts = ["hello", "the quick brown fox jumps", "world, how are you"]
    limits = [5, 3, 8]
    rows = prompt_table(prompt=prompts, max_tokens=limits, temperature=[0.0] * 3)
    ours, theirs = runtime.predict(rows).to_pylist(), twin.predict(rows).to_pylist()
    for prompt, limit, got, expected in zip(prompts, limits, ours, theirs, strict=True):
        assert got["completion"] == expected["completion"] and got["completion"]
        assert got["tokens_in"] == expected["tokens_in"] == len(twin.tokenizer(prompt)["input_ids"])
        assert got["tokens_out"] == expected["tokens_out"] <= limit
        assert got["finish_reason"] == ("length" if got["tokens_out"] == limit else "stop")
        assert got["ttft_ms"] > 0 and got["tokens_per_s"] > 0 and got["error"] is None
    sampled = runtime.predict(prompt_table(prompt=["hello"], max_tokens=[4], temperature=[1.5])).to_pylist()[0]
    assert sampled["tokens_out"] >= 1 and sampled["error"] is None


def test_rows_decoded_together_answer_as_each_alone(models: tuple[Path, Path]) -> None:
    """40 rows (more than one group of sequences) with prompts long enough to span several prompt passes, a
    sampled row among greedy ones: every greedy row answers exactly as it does alone."""
    runtime = GGUFRuntime.from_file(models[1])
    words = "the quick brown fox jumps over the lazy dog hello world how are you today".split()
    prompts = [" ".join(words[(i + j) % len(words)] for j in range(3 + (i * 7) % 45)) for i in range(40)]
    temperatures = [1.5 if i == 5 else 0.0 for i in range(40)]
    limits = [3 + i % 6 for i in range(40)]
    together = runtime.predict(prompt_table(prompt=prompts, max_tokens=limits, temperature=temperatures)).to_pylist()
    assert sum(r["tokens_in"] for r in together) > 2 * 512 and runtime.engine.rows < 40
    for i in range(0, 40, 3):
        alone = runtime.predict(
            prompt_table(prompt=[prompts[i]], max_tokens=[limits[i]], temperature=[0.0])
        ).to_pylist()[0]
        if i != 5:
            assert together[i]["completion"] == alone["completion"], i
        assert together[i]["tokens_in"] == alone["tokens_in"] and together[i]["error"] is None


def test_a_call_joins_rows_that_are_decoding_and_leaves_before_them(models: tuple[Path, Path]) -> None:
    """Continuous batching: a short call made while a long one decodes starts at the next pass and returns long
    before the long one ends, each answered as alone. (The long call's sink sleeps 5 ms a token, in the decoding
    thread: a slow model.)"""
    runtime = GGUFRuntime.from_file(models[1])
    started, pieces = threading.Event(), []

    def slow(piece: str) -> None:
        pieces.append(piece)
        started.set()
        time.sleep(0.005)

    alone = {
        prompt: runtime.predict(prompt_table(prompt=[prompt], max_tokens=[limit], temperature=[0.0])).to_pylist()[0]
        for prompt, limit in (("hello", 100), ("the quick brown fox", 3))
    }
    SINKS.open("slow", slow)
    try:
        with ThreadPoolExecutor(2) as pool:
            long = pool.submit(runtime.predict, prompt_table(prompt=["hello"], max_tokens=[100], temperature=[0.0],
                                                      stream_id=["slow"]))  # fmt: skip
            assert started.wait(10)
            short = runtime.predict(prompt_table(prompt=["the quick brown fox"], max_tokens=[3], temperature=[0.0]))
            assert not long.done()  # the short call did not wait for the long one's end
            assert len(pieces) < 60  # and it ran beside it: the long one had decoded few of its tokens
            finished = long.result(timeout=30)
    finally:
        SINKS.close("slow")
    assert short.to_pylist()[0]["completion"] == alone["the quick brown fox"]["completion"]
    assert finished.to_pylist()[0]["completion"] == alone["hello"]["completion"]


def test_messages_use_the_files_template_and_bad_rows_fail_alone(models: tuple[Path, Path]) -> None:
    runtime = GGUFRuntime.from_file(models[1])
    twin = TransformersRuntime.from_directory(models[0], "text-generation")
    messages = [{"role": "user", "content": "hello"}]
    out = runtime.predict(
        prompt_table(
            prompt=[None, "hello " * 200, None, "fine"],
            messages=[json.dumps(messages), None, "not json", None],
            max_tokens=[2, 2, 2, 2],
            temperature=[0.0] * 4,
        )
    ).to_pylist()
    templated = twin.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert out[0]["tokens_in"] == len(twin.tokenizer(templated)["input_ids"]) and out[0]["error"] is None
    assert "maximum context length is 128 tokens" in out[1]["error"] and out[1]["finish_reason"] == "error"
    assert out[2]["error"].startswith("messages:") and out[2]["completion"] is None
    assert out[3]["error"] is None and out[3]["tokens_out"] >= 1


def test_a_files_template_runs_sandboxed_and_its_refusal_is_the_rows(models: tuple[Path, Path], tmp_path: Path) -> None:
    escaping = GGUFRuntime.from_file(gpt2_to_gguf(models[0], tmp_path / "escape.gguf", template=ESCAPE))
    out = escaping.predict(prompt_table(messages=[json.dumps([{"role": "user", "content": "hi"}])], max_tokens=[2]))
    error = out.column("error")[0].as_py()
    assert error.startswith("messages: the model's chat template failed") and "unsafe" in error
    refusing = GGUFRuntime.from_file(gpt2_to_gguf(models[0], tmp_path / "refuse.gguf", template=REFUSING))
    two = json.dumps([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    one = json.dumps([{"role": "user", "content": "hello"}])
    out = refusing.predict(prompt_table(messages=[two, one], max_tokens=[2, 2])).to_pylist()
    assert out[0]["error"] == "messages: one message at a time" and out[1]["error"] is None
    assert out[1]["tokens_in"] == 1  # "hello", the template's whole output


def test_text_goes_to_an_open_sink_as_it_is_decoded(models: tuple[Path, Path]) -> None:
    pieces, completion = streamed(GGUFRuntime.from_file(models[1]), "g1")
    assert "".join(pieces) == completion and len(pieces) >= 2


def test_a_gguf_file_is_recognised_and_a_bad_one_refused(models: tuple[Path, Path], tmp_path: Path) -> None:
    assert detect_framework(models[1]) == "gguf"
    assert package(models[1], tmp_path, None).task == "text-generation"
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(models[1].read_bytes()[:4096])  # cut short: the header is there, the tensors are not
    with pytest.raises(InvalidModelError, match="broken.gguf: llama.cpp could not load it"):
        package(broken, tmp_path, None)
    with pytest.raises(InvalidModelError, match="uploaded as its .gguf file"):
        package(models[0], tmp_path, None)


def test_a_runtime_let_go_of_stops_its_thread_and_an_unloaded_one_refuses(models: tuple[Path, Path]) -> None:
    """The loader caches runtimes weakly: a GGUF runtime no pipeline holds must go, its decoding thread with it."""
    runtime = GGUFRuntime.from_file(models[1])
    thread = runtime.engine._thread
    assert thread.is_alive()
    del runtime
    gc.collect()
    thread.join(timeout=10)
    assert not thread.is_alive()
    unloaded = GGUFRuntime.from_file(models[1])
    engine = unloaded.engine
    unloaded.unload()
    assert not engine._thread.is_alive()
    with pytest.raises(PredictionError, match="unloaded"):
        engine.run(None, [[1]], [0.0])  # type: ignore[arg-type]


def test_a_gguf_that_names_a_pooling_embeds_as_transformers_pools(models: tuple[Path, Path], tmp_path: Path) -> None:
    """A GGUF marked with mean pooling is an embedding model: one unit vector per text, equal to the mean of the
    same model's last hidden states in transformers; texts packed into one pass answer as each alone; a text past
    the context fails alone; an empty one is zeros."""
    pooled = gpt2_to_gguf(models[0], tmp_path / "pooled.gguf", pooling=True)
    packaged = package(pooled, tmp_path, None)
    assert (packaged.task, packaged.schema.inputs[0].name) == ("embedding", "text")  # type: ignore[index]
    runtime = GGUFRuntime.from_file(pooled)
    texts = ["hello", "the quick brown fox", "world " * 20, "how are you today", "hello world " * 100, ""]
    out = runtime.predict(pa.table({"text": texts}))
    vectors = out.column("embedding").to_pylist()
    np.testing.assert_allclose(np.array(vectors[:4]), mean_pooled(models[0], texts[:4]), atol=1e-4)
    alone = [runtime.predict(pa.table({"text": [t]})).column("embedding")[0].as_py() for t in texts[:4]]
    np.testing.assert_allclose(np.array(alone), np.array(vectors[:4]), atol=1e-5)
    assert vectors[4] is None and "maximum context length is 128 tokens" in out.column("error")[4].as_py()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models[0])
    assert out.column("tokens_in").to_pylist() == [len(tokenizer(t)["input_ids"]) for t in texts]
    assert vectors[5] == [0.0] * 32
    runtime.unload()
