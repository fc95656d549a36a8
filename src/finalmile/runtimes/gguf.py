"""GGUF language models (one `.gguf` file: weights, vocabulary, chat template), run with llama.cpp through
`llama-cpp-python`'s low-level API, on the CPU. A file whose metadata names a pooling is an embedding model
(`task="embedding"`: one vector per text, as a Hugging Face embedding model gives); any other generates.

The same columns in and out as every generative engine (`runtimes.generation`), so the OpenAI surface, the log,
monitors and rollouts treat a GGUF model as they treat a transformers one. Rows are decoded with continuous batching,
as llama.cpp's own server does: one thread owns the context, each row is a sequence of it, and every `llama_decode`
advances every unfinished row by a token and reads as much of the newly arrived prompts as fits. A row handed in
while others decode joins at the next pass and leaves when it is done, so a short call never waits for a long one;
a pipeline deployed with `workers > 1` hands the batcher's next batch in while one decodes. Tokens are chosen here
from each row's logits (greedy at temperature 0, else plain temperature sampling), so rows of different temperatures
share a pass.
The chat template a file carries is user content: it is rendered in Jinja's immutable sandbox, as transformers
renders one. Nothing is downloaded.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
import pyarrow as pa
from llama_cpp import _internals as internals

from finalmile.errors import InvalidModelError, PredictionError
from finalmile.runtimes.base import BaseRuntime, Packaged, RuntimeContext
from finalmile.runtimes.generation import (
    EMBEDDING,
    GENERATION,
    GENERATION_SCHEMA,
    Followed,
    Generated,
    Prompts,
    admitted,
    embedding_schema,
    embedding_table,
    input_error,
    smoke,
)
from finalmile.runtimes.gguf_embeddings import PROMPT_CHUNK, Embedder, cpu_threads
from finalmile.schema import Schema

log = logging.getLogger(__name__)
FRAMEWORK = "gguf"
MAX_CONTEXT = 8192
"""Tokens of context one row gets at most; a row asking for more is refused with this limit in the message."""
CACHE_TOKENS = 32768
"""Tokens the key/value cache holds (allocated at load): rows decoded together are as many as fit at the model's
context (32 at most, as for transformers), so a row never runs out of room."""
MAX_ROWS = 32


@llama_cpp.llama_log_callback
def _llama_log(level: int, text: bytes, user_data: Any) -> None:
    """llama.cpp's log into this process's logging: its errors (ggml level 4) as warnings, the rest at debug level."""
    log.log(logging.WARNING if level == 4 else logging.DEBUG, "%s", text.decode("utf-8", errors="replace").rstrip())


# With `verbose=False`, llama-cpp-python points the process's stdout and stderr at /dev/null while a model loads
# (every thread's, and racy between two loads): its log is taken here instead, and everything loads verbose.
llama_cpp.llama_log_set(_llama_log, ctypes.c_void_p(0))


def package(source: Any, workdir: Path, sample: pa.Table | None) -> Packaged:
    path = Path(source) if isinstance(source, (str, Path)) else None
    if path is None or not path.is_file() or path.suffix.lower() != ".gguf":
        raise InvalidModelError("a GGUF model is uploaded as its .gguf file")
    runtime = GGUFRuntime.from_file(path)
    try:
        smoke(runtime)  # a model that does not run is refused at upload, not at deploy
    finally:
        runtime.unload()  # its decoding thread and context go now, not with the process
    return Packaged(FRAMEWORK, path, runtime.schema, task=runtime.context.task)


def _task_of(path: Path) -> str:
    """What a file's metadata says it is for: a model that names a pooling (an embedding model) embeds, any other
    generates. A file whose metadata cannot be read is left to llama.cpp's load to refuse."""
    import gguf

    try:
        fields = gguf.GGUFReader(str(path)).fields
    except Exception:
        return GENERATION
    return EMBEDDING if any(name.endswith(".pooling_type") for name in fields) else GENERATION


class GGUFRuntime(BaseRuntime):
    """Text generation with llama.cpp, the rows of a batch decoded together."""

    framework = FRAMEWORK

    @classmethod
    def from_file(cls, path: Path) -> GGUFRuntime:
        """Loaded from a file at upload, before the registry knows it."""
        from finalmile.config import FinalmileSettings

        runtime = cls(RuntimeContext(path, Schema(inputs=None), _task_of(path), None, FinalmileSettings()))
        runtime.load()
        return runtime

    def _load(self) -> None:
        path = self.context.artifact
        try:
            self.model = internals.LlamaModel(path_model=str(path), params=llama_cpp.llama_model_default_params())
        except Exception as exc:  # llama.cpp says only that it failed (its reasons are in the log)
            raise InvalidModelError(f"{path.name}: llama.cpp could not load it as a GGUF model ({exc})") from None
        metadata = self.model.metadata()
        # A position past the trained context aborts llama.cpp (the process, not the call): rows are refused first.
        self.context_length = min(int(self.model.n_ctx_train()), MAX_CONTEXT)
        rows = max(1, min(MAX_ROWS, CACHE_TOKENS // self.context_length))
        try:
            if self.context.task == EMBEDDING:
                self.engine: _Engine | Embedder = Embedder(self.model, rows, self.context_length)
            else:
                self.engine = _Engine(self.model, rows, self.context_length, path.stem)
        except Exception as exc:
            self.model.close()
            raise InvalidModelError(f"{path.name}: llama.cpp could not make a context for it ({exc})") from None
        # The decoding thread holds the engine, not this runtime: when the last pipeline lets go of the runtime (the
        # loader's cache is weak), the thread stops and the context is freed.
        weakref.finalize(self, self.engine.close)
        if self.context.task == EMBEDDING:
            if self.schema.inputs is None:
                self.schema = embedding_schema(int(self.model.n_embd()))
            return
        self.eos = {t for t in range(int(self.model.n_vocab())) if llama_cpp.llama_vocab_is_eog(self.model.vocab, t)}
        self.template = _ChatTemplate(metadata.get("tokenizer.chat_template"), self.model)
        if self.schema.inputs is None:
            self.schema = GENERATION_SCHEMA

    def unload(self) -> None:
        if self.ready:
            self.engine.close()
        super().unload()

    def _predict(self, table: pa.Table) -> pa.Table:
        if isinstance(self.engine, Embedder):
            return self._embed(table)
        result = Generated(table.num_rows, time.perf_counter())
        prompts = Prompts(table, self.template)
        ready = admitted(prompts, result, self._tokens, self.context_length)
        if ready:
            rows = [i for i, _, _ in ready]
            followed = Followed(rows, [limit for _, _, limit in ready], self.eos, self.engine.text,
                                [prompts.sinks[i] for i in rows], result)  # fmt: skip
            self.engine.run(followed, [ids for _, ids, _ in ready], [prompts.temperatures[i] for i in rows])
        return result.table()

    def _embed(self, table: pa.Table) -> pa.Table:
        """Each text's vector, pooled as the file says and of unit length, as the transformers engine embeds; a text
        past the context fails alone."""
        assert isinstance(self.engine, Embedder)
        texts = [t if t is not None else "" for t in table.column("text").to_pylist()]
        tokens = [self._tokens(text) for text in texts]
        errors = [input_error(len(t), self.context_length) for t in tokens]
        good = [i for i, e in enumerate(errors) if e is None]
        width = int(self.model.n_embd())
        vectors = np.zeros((len(texts), width), dtype=np.float32)
        if good:
            pooled = self.engine.embed([tokens[i] for i in good])
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            vectors[good] = pooled / np.where(norms > 0, norms, 1.0)
        return embedding_table(vectors, [len(t) for t in tokens], errors)

    def _tokens(self, text: str) -> list[int]:
        """A prompt's tokens: the BOS the model asks for, special tokens parsed (as transformers does)."""
        return list(self.model.tokenize(text.encode(), add_bos=True, special=True))


class _Engine:
    """The context and the thread that decodes in it: rows from any thread wait, are taken into free sequences, and
    advance a token a pass until each is done."""

    def __init__(self, model: Any, rows: int, context_length: int, name: str) -> None:
        self.model, self.rows = model, rows
        threads = cpu_threads()
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = context_length * rows
        params.n_batch = params.n_ubatch = PROMPT_CHUNK
        params.n_seq_max = rows
        params.kv_unified = True  # one cache the rows share: each may use its whole context, all of them together fit
        params.n_threads = params.n_threads_batch = threads
        self.llama = internals.LlamaContext(model=model, params=params)
        self.batch = internals.LlamaBatch(n_tokens=PROMPT_CHUNK + rows, embd=0, n_seq_max=rows)
        self.vocabulary = int(model.n_vocab())
        self.random = np.random.default_rng()
        self._wake = threading.Condition()
        self._waiting: deque[_Row] = deque()
        """Rows handed in by `run` (any thread), taken into free sequences by the decoding thread."""
        self._running: list[_Row] = []
        self._free = list(range(rows - 1, -1, -1))
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name=f"gguf-{name}", daemon=True)
        self._thread.start()

    def run(self, followed: Followed, prompts: list[list[int]], temperatures: list[float]) -> None:
        """Decode `prompts` (the rows `followed` follows) and return when the last is done."""
        with self._wake:
            if self._closing:
                raise PredictionError("gguf model failed: it was unloaded")
            call = _Call(followed)
            rows = zip(prompts, temperatures, strict=True)
            self._waiting.extend(_Row(call, j, prompt, temperature) for j, (prompt, temperature) in enumerate(rows))
            self._wake.notify()
        call.finished.wait()
        if call.error is not None:
            raise call.error

    def close(self) -> None:
        """Stop the thread: rows still waiting or running fail, and the thread frees the context as it ends (this
        may run in that very thread, from a finalizer the garbage collector called mid-pass)."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _loop(self) -> None:
        """The decoding thread: while any row waits or runs, take waiting rows into free sequences and make one
        pass. A row that arrives while others decode joins at the next pass (continuous batching)."""
        try:
            while True:
                with self._wake:
                    while not self._waiting and not self._running and not self._closing:
                        self._wake.wait()
                    if self._closing:
                        break
                    while self._waiting and self._free:
                        row = self._waiting.popleft()
                        row.sequence = self._free.pop()
                        self._running.append(row)
                try:
                    self._step()
                except Exception as exc:  # llama.cpp refused a pass: every row in it fails, the next starts clean
                    self._fail(PredictionError(f"gguf model failed: {type(exc).__name__}: {exc}"))
        finally:
            self._fail(PredictionError("gguf model failed: it was unloaded"))
            self.batch.close()
            self.llama.close()

    def _step(self) -> None:
        """One `llama_decode`: a token of every decoding row, then as much of the prompts being read as fits."""
        entries: list[tuple[int, int, int, bool]] = []
        answered: list[_Row] = []
        for row in self._running:
            if row.read == len(row.prompt):
                tokens = row.call.followed.tokens[row.j]
                entries.append((tokens[-1], len(row.prompt) + len(tokens) - 1, row.sequence, True))
                answered.append(row)
        room = PROMPT_CHUNK - len(entries)
        for row in self._running:
            if row.read < len(row.prompt) and room > 0:
                upto = min(len(row.prompt), row.read + room)
                last = len(row.prompt) - 1
                entries += [(row.prompt[k], k, row.sequence, k == last) for k in range(row.read, upto)]
                room -= upto - row.read
                row.read = upto
                if upto == len(row.prompt):
                    answered.append(row)
        logits = self._pass(entries)
        at = time.perf_counter()
        for row in answered:
            followed = row.call.followed
            followed.token(row.j, self._choose(logits[row.sequence], row.temperature), at)
            if followed.done[row.j]:
                self._finish(row)

    def _finish(self, row: _Row) -> None:
        llama_cpp.llama_memory_seq_rm(self.llama.memory, row.sequence, -1, -1)
        self._running.remove(row)
        self._free.append(row.sequence)
        row.call.left -= 1
        if row.call.left == 0:
            row.call.followed.end()
            row.call.finished.set()

    def _fail(self, error: PredictionError) -> None:
        with self._wake:
            failed = self._running + list(self._waiting)
            self._running, self._waiting = [], deque()
            self._free = list(range(self.rows - 1, -1, -1))
        llama_cpp.llama_memory_clear(self.llama.memory, True)
        for call in {id(row.call): row.call for row in failed}.values():
            call.error = error
            call.finished.set()

    def _pass(self, entries: list[tuple[int, int, int, bool]]) -> dict[int, int]:
        """One `llama_decode` of (token, position, row, wants logits) entries; row -> where its logits are."""
        batch = self.batch.batch
        wanted = {}
        for i, (token, position, row, logits) in enumerate(entries):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, position, 1, logits
            batch.seq_id[i][0] = row
            if logits:
                wanted[row] = i
        batch.n_tokens = len(entries)
        self.llama.decode(self.batch)
        return wanted

    def _choose(self, index: int, temperature: float) -> int:
        """Greedy at temperature 0; else plain temperature sampling, as OpenAI's API means it."""
        scores = np.ctypeslib.as_array(self.llama.get_logits_ith(index), shape=(self.vocabulary,))
        if temperature <= 0:
            return int(np.argmax(scores))
        weights = np.exp((scores - scores.max()) / temperature, dtype=np.float64)
        cumulative = np.cumsum(weights)
        return int(np.searchsorted(cumulative, self.random.random() * cumulative[-1], side="right"))

    def text(self, tokens: list[int]) -> str:
        return str(self.model.detokenize(tokens, special=False).decode("utf-8", errors="replace"))


class _Call:
    """One `predict` call's rows: followed as they decode, the caller woken when the last is done."""

    def __init__(self, followed: Followed) -> None:
        self.followed = followed
        self.left = len(followed.rows)
        self.finished = threading.Event()
        self.error: Exception | None = None


class _Row:
    """A row in the context: its prompt, how much of it has been read, its sequence and temperature."""

    def __init__(self, call: _Call, j: int, prompt: list[int], temperature: float) -> None:
        self.call, self.j, self.prompt, self.temperature = call, j, prompt, temperature
        self.read = 0
        self.sequence = -1


class _ChatTemplate:
    """The file's chat template, rendered as `render_messages` asks a tokenizer to (in Jinja's sandbox)."""

    def __init__(self, source: str | None, model: Any) -> None:
        self.chat_template = source
        if source:
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            def refuse(message: str) -> None:
                raise ValueError(f"messages: {message}")

            environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            environment.globals["raise_exception"] = refuse
            self._template = environment.from_string(source)
            self._special = {
                "bos_token": _piece(model, model.token_bos()),
                "eos_token": _piece(model, model.token_eos()),
            }

    def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool, add_generation_prompt: bool) -> str:
        return str(self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         **self._special))  # fmt: skip


def _piece(model: Any, token: int) -> str:
    return "" if token < 0 else str(model.token_to_piece(token, special=True).decode("utf-8", errors="replace"))
