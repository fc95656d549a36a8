"""The transformers runtime on tiny models made here: batched decoding answers each row as alone, token counts and
finish reasons are exact, rows past the context are refused alone, and an upload needs safetensors weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

pytest.importorskip("transformers")

from finalmile.errors import InvalidModelError  # noqa: E402
from finalmile.runtimes import detect_framework  # noqa: E402
from finalmile.runtimes.generation import prompt_table  # noqa: E402
from finalmile.runtimes.transformers import TransformersRuntime, package  # noqa: E402
from tests.fixtures import streamed, tiny_language_models  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return tiny_language_models(tmp_path_factory.mktemp("models"))


def test_a_batch_decodes_each_row_as_it_decodes_alone(models: tuple[Path, Path]) -> None:
    runtime = TransformersRuntime.from_directory(models[0], "text-generation")
    prompts = ["hello", "the quick brown fox jumps", "world"]
    limits = [5, 3, 8]
    batch = runtime.predict(prompt_table(prompt=prompts, max_tokens=limits, temperature=[0.0] * 3)).to_pylist()
    for prompt, limit, together in zip(prompts, limits, batch, strict=True):
        alone = runtime.predict(prompt_table(prompt=[prompt], max_tokens=[limit], temperature=[0.0])).to_pylist()[0]
        assert together["completion"] == alone["completion"] and together["tokens_out"] == alone["tokens_out"]
        assert together["tokens_in"] == len(runtime.tokenizer(prompt)["input_ids"])
        # each row stops at its own limit (or at the end-of-text token, which is then the reason)
        assert together["tokens_out"] <= limit
        assert together["finish_reason"] == ("length" if together["tokens_out"] == limit else "stop")
        assert together["ttft_ms"] > 0 and together["tokens_per_s"] > 0


def test_chat_messages_use_the_chat_template_and_bad_rows_fail_alone(models: tuple[Path, Path]) -> None:
    runtime = TransformersRuntime.from_directory(models[0], "text-generation")
    messages = json.dumps([{"role": "user", "content": "hello"}])
    out = runtime.predict(
        prompt_table(
            prompt=[None, "hello " * 200, None, "fine"],
            messages=[messages, None, "not json", None],
            max_tokens=[2, 2, 2, 2],
            temperature=[0.0] * 4,
        )
    ).to_pylist()
    templated = runtime.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hello"}], tokenize=False, add_generation_prompt=True
    )
    assert out[0]["tokens_in"] == len(runtime.tokenizer(templated)["input_ids"]) and out[0]["error"] is None
    assert "maximum context length is 128 tokens" in out[1]["error"] and out[1]["finish_reason"] == "error"
    assert out[2]["error"].startswith("messages:") and out[2]["completion"] is None
    assert out[3]["error"] is None and out[3]["tokens_out"] >= 1


def test_text_goes_to_an_open_sink_as_it_is_decoded(models: tuple[Path, Path]) -> None:
    pieces, completion = streamed(TransformersRuntime.from_directory(models[0], "text-generation"), "s1")
    assert "".join(pieces) == completion and len(pieces) >= 2


def test_embeddings_are_unit_vectors_and_a_long_text_fails_alone(models: tuple[Path, Path]) -> None:
    runtime = TransformersRuntime.from_directory(models[1], "embedding")
    out = runtime.predict(pa.table({"text": ["hello", "hello " * 200, "world"]})).to_pylist()
    assert out[1]["embedding"] is None and "maximum context length" in out[1]["error"]
    alone = runtime.predict(pa.table({"text": ["hello"]})).to_pylist()[0]
    assert out[0]["embedding"] == pytest.approx(alone["embedding"], abs=1e-6)
    assert sum(v * v for v in out[2]["embedding"]) == pytest.approx(1.0, abs=1e-5)


def test_a_directory_is_recognised_and_needs_safetensors(models: tuple[Path, Path], tmp_path: Path) -> None:
    assert detect_framework(models[0]) == "transformers"
    assert package(models[0], _fresh(tmp_path / "a"), None).task == "text-generation"
    assert package(models[1], _fresh(tmp_path / "b"), None).task == "embedding"
    unsafe = tmp_path / "unsafe"
    shutil.copytree(models[0], unsafe)
    (unsafe / "model.safetensors").rename(unsafe / "pytorch_model.bin")
    with pytest.raises(InvalidModelError, match="safetensors"):
        package(unsafe, _fresh(tmp_path / "c"), None)


def _fresh(path: Path) -> Path:
    path.mkdir()
    return path
