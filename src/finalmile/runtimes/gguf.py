"""GGUF language models (one `.gguf` file: weights, vocabulary, chat template), run with llama.cpp through
`llama-cpp-python`, on the CPU.

The same columns in and out as every generative engine (`runtimes.generation`), so the OpenAI surface, the log,
monitors and rollouts treat a GGUF model as they treat a transformers one. llama-cpp-python's API decodes one
sequence at a time, so the rows of a batch are decoded one after another (each row's `ttft_ms` counts from the
batch's start, so the wait shows); llama.cpp uses every core for each. The chat template the file carries is user
content: it is rendered in Jinja's immutable sandbox, as transformers renders one. Nothing is downloaded.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import llama_cpp
import pyarrow as pa

from finalmile.errors import InvalidModelError
from finalmile.runtimes.base import BaseRuntime, Packaged, RuntimeContext
from finalmile.runtimes.generation import (
    DEFAULT_MAX_TOKENS,
    GENERATION,
    GENERATION_SCHEMA,
    Followed,
    Generated,
    Prompts,
    context_error,
    smoke,
)
from finalmile.schema import Schema

log = logging.getLogger(__name__)
FRAMEWORK = "gguf"
MAX_CONTEXT = 8192
"""Tokens of context a loaded model gets at most (its key/value cache is allocated for all of them at load); a row
asking for more is refused with this limit in the message."""


@llama_cpp.llama_log_callback
def _llama_log(level: int, text: bytes, user_data: Any) -> None:
    """llama.cpp's log into this process's logging: its errors as warnings, the rest at debug level."""
    log.log(logging.WARNING if level == 3 else logging.DEBUG, "%s", text.decode("utf-8", errors="replace").rstrip())


# `verbose=False` would have llama-cpp-python point the process's stdout and stderr at /dev/null while a model loads
# (every thread's, and racy between two loads): its log is taken here instead, and models load with `verbose=True`.
llama_cpp.llama_log_set(_llama_log, ctypes.c_void_p(0))


def _llama(path: str, **options: Any) -> Any:
    llm = llama_cpp.Llama(model_path=path, verbose=True, **options)
    llm.verbose = False  # and no timing lines on stderr per call
    return llm


def package(source: Any, workdir: Path, sample: pa.Table | None) -> Packaged:
    path = Path(source) if isinstance(source, (str, Path)) else None
    if path is None or not path.is_file() or path.suffix.lower() != ".gguf":
        raise InvalidModelError("a GGUF model is uploaded as its .gguf file")
    runtime = GGUFRuntime.from_file(path)
    smoke(runtime)  # a model that does not run is refused at upload, not at deploy
    return Packaged(FRAMEWORK, path, runtime.schema, task=GENERATION)


class GGUFRuntime(BaseRuntime):
    """Text generation with llama.cpp."""

    framework = FRAMEWORK

    @classmethod
    def from_file(cls, path: Path) -> GGUFRuntime:
        """Loaded from a file at upload, before the registry knows it."""
        from finalmile.config import FinalmileSettings

        runtime = cls(RuntimeContext(path, Schema(inputs=None), GENERATION, None, FinalmileSettings()))
        runtime.load()
        return runtime

    def _load(self) -> None:
        path = str(self.context.artifact)
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        try:
            probe = _llama(path, vocab_only=True)
            metadata = dict(probe.metadata)
            probe.close()
        except Exception as exc:  # llama.cpp says only that it failed; its log went to a closed stderr
            raise InvalidModelError(f"{Path(path).name}: llama.cpp could not load it as a GGUF model ({exc})") from None
        arch = metadata.get("general.architecture", "")
        if f"{arch}.pooling_type" in metadata:
            raise InvalidModelError(
                f"{Path(path).name}: a GGUF embedding model ({arch}); upload embedding models as a Hugging Face "
                "directory (GGUF is served for text generation)"
            )
        try:  # positions past the trained context abort llama.cpp (the process, not the call): rows are refused first
            trained = int(metadata[f"{arch}.context_length"])
        except (KeyError, ValueError):
            raise InvalidModelError(f"{Path(path).name}: its metadata has no {arch}.context_length") from None
        self.context_length = min(trained, MAX_CONTEXT)
        try:
            self.llm = _llama(path, n_ctx=self.context_length, n_threads=threads, n_threads_batch=threads)
        except Exception as exc:
            raise InvalidModelError(f"{Path(path).name}: llama.cpp could not load it ({exc})") from None
        vocab = self.llm._model.vocab
        self.eos = {t for t in range(self.llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)}
        self.template = _ChatTemplate(metadata.get("tokenizer.chat_template"), self.llm)
        self._lock = threading.Lock()
        """One sequence at a time: the context holds one."""
        if self.schema.inputs is None:
            self.schema = GENERATION_SCHEMA

    def unload(self) -> None:
        if self.ready:
            self.llm.close()
        super().unload()

    def _predict(self, table: pa.Table) -> pa.Table:
        with self._lock:
            return self._generate(table)

    def _generate(self, table: pa.Table) -> pa.Table:
        result = Generated(table.num_rows, time.perf_counter())
        prompts = Prompts(table, self.template)
        for i, text in enumerate(prompts.texts):
            ids = self.llm.tokenize(text.encode(), add_bos=True, special=True) if text is not None else []
            error = prompts.errors[i] or context_error(len(ids), prompts.limits[i], self.context_length, text is None)
            if error is not None:
                result.refuse(i, len(ids), error)
                continue
            result.tokens_in[i] = len(ids)
            limit = prompts.limits[i] or min(DEFAULT_MAX_TOKENS, self.context_length - len(ids))
            followed = Followed([i], [limit], self.eos, self._text, [prompts.sinks[i]], result)
            temperature = prompts.temperatures[i]
            # Plain temperature sampling as OpenAI's API means it (top-k, top-p and min-p off); 0 is greedy.
            tokens = self.llm.generate(ids, temp=temperature, top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0,
                                       repeat_penalty=1.0, reset=True)  # fmt: skip
            for token in tokens:
                followed.token(0, token, time.perf_counter())
                if followed.done[0]:
                    break
            followed.end()
        return result.table()

    def _text(self, tokens: list[int]) -> str:
        return self.llm.detokenize(tokens, special=False).decode("utf-8", errors="replace")


class _ChatTemplate:
    """The file's chat template, rendered as `render_messages` asks a tokenizer to (in Jinja's sandbox)."""

    def __init__(self, source: str | None, llm: Any) -> None:
        self.chat_template = source
        if source:
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            def refuse(message: str) -> None:
                raise ValueError(f"messages: {message}")

            environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            environment.globals["raise_exception"] = refuse
            self._template = environment.from_string(source)
            self._special = {
                "bos_token": _piece(llm, llm.token_bos()),
                "eos_token": _piece(llm, llm.token_eos()),
            }

    def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool, add_generation_prompt: bool) -> str:
        return str(self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         **self._special))  # fmt: skip


def _piece(llm: Any, token: int) -> str:
    return "" if token < 0 else llm.detokenize([token], special=True).decode("utf-8", errors="replace")
