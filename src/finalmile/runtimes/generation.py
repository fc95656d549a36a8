"""What every generative engine shares: the columns a generative model takes and returns, prompts from chat
messages, the context-length rule, per-row results, and the sinks that stream text to a waiting client.

A generative model is a model like any other to the rest of finalmile: rows in (a prompt or chat messages, and the
call's options), rows out (the completion and its figures), so the batcher, the pipeline steps, the inference log,
monitors and rollouts need nothing new. Columns, in and out:

- in: `prompt` or `messages` (a JSON list of `{"role", "content"}`), `max_tokens`, `temperature`, `stream_id`
  (set by the OpenAI surface when a client streams; the engine pushes text to that sink as it decodes);
- out: `completion`, `finish_reason` (`stop`, `length`, or `error`), `tokens_in`, `tokens_out`, `ttft_ms` (from the
  batch's start to the row's first token), `tokens_per_s` (the row's output tokens over its decoding time) and
  `error` (why a row was refused, e.g. past the context length; null otherwise).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from finalmile.schema import Column, Schema

GENERATION = "text-generation"
EMBEDDING = "embedding"
DEFAULT_MAX_TOKENS = 256
"""When a call names no `max_tokens`: at most this many, and never past the context."""

GENERATION_SCHEMA = Schema(
    inputs=[
        Column(name="prompt", dtype="string", nullable=True),
        Column(name="messages", dtype="string", nullable=True),
        Column(name="max_tokens", dtype="int64", nullable=True),
        Column(name="temperature", dtype="float64", nullable=True),
        Column(name="stream_id", dtype="string", nullable=True),
    ],
    outputs=[
        Column(name="completion", dtype="string", nullable=True),
        Column(name="finish_reason", dtype="string"),
        Column(name="tokens_in", dtype="int64"),
        Column(name="tokens_out", dtype="int64"),
        Column(name="ttft_ms", dtype="float64", nullable=True),
        Column(name="tokens_per_s", dtype="float64", nullable=True),
        Column(name="error", dtype="string", nullable=True),
    ],
)


def embedding_schema(width: int) -> Schema:
    return Schema(
        inputs=[Column(name="text", dtype="string")],
        outputs=[
            Column(name="embedding", dtype="float32", shape=(width,), nullable=True),
            Column(name="tokens_in", dtype="int64"),
            Column(name="error", dtype="string", nullable=True),
        ],
    )


def render_messages(raw: str, tokenizer: Any) -> str:
    """Chat messages as the model's own chat template writes them, or `role: content` lines where it has none."""
    try:
        messages = json.loads(raw)
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages
        ):
            raise ValueError
    except ValueError:
        raise ValueError("messages: expected a JSON list of {role, content} with text content") from None
    if getattr(tokenizer, "chat_template", None):
        try:
            return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        except ValueError:
            raise
        except Exception as exc:  # the template is the model's (user) code: Jinja's errors are the row's, not ours
            raise ValueError(f"messages: the model's chat template failed on them ({exc})") from None
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


def prompt_table(**columns: list[Any]) -> pa.Table:
    """Rows of the generative input columns, any not given null: `prompt_table(prompt=["Hi"], max_tokens=[8])`."""
    rows = len(next(iter(columns.values())))
    data = {name: columns.get(name, [None] * rows) for name in GENERATION_SCHEMA.input_names()}
    return pa.table(data, schema=GENERATION_SCHEMA.input_arrow_schema())


def smoke(runtime: Any) -> None:
    """One tiny call, to refuse at upload a generative or embedding model that loads but cannot run."""
    if runtime.context.task == EMBEDDING:
        runtime.predict(pa.table({"text": ["Hello"]}))
    else:
        runtime.predict(prompt_table(prompt=["Hello"], max_tokens=[1]))


def embedding_table(vectors: np.ndarray, tokens_in: list[int], errors: list[str | None]) -> pa.Table:
    """An embedding engine's answer (`embedding_schema`): a row that failed has no vector, and says why."""
    width = vectors.shape[1]
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), width)
    valid = pa.array([e is None for e in errors])
    return pa.table(
        {
            "embedding": pc.if_else(valid, embedding, pa.nulls(len(errors), embedding.type)),
            "tokens_in": pa.array(tokens_in, pa.int64()),
            "error": pa.array(errors, pa.string()),
        }
    )


def context_error(tokens_in: int, max_tokens: int | None, context: int, empty: bool) -> str | None:
    """Why a row cannot run, in the words OpenAI's API uses, or None."""
    if empty:
        return "prompt: a row needs a prompt or messages"
    if max_tokens is not None and max_tokens < 1:
        return f"max_tokens: must be at least 1, got {max_tokens}"
    asked = tokens_in + (max_tokens or 1)
    if asked > context:
        return (
            f"This model's maximum context length is {context} tokens. However, you requested {asked} tokens "
            f"({tokens_in} in the prompt, {max_tokens or 1} for the completion). Please reduce the length of the "
            "prompt or of max_tokens."
        )
    return None


def input_error(tokens: int, context: int) -> str | None:
    """Why a text cannot be embedded, or None."""
    if tokens <= context:
        return None
    return (
        f"This model's maximum context length is {context} tokens, however you requested {tokens} tokens. "
        "Please reduce the length of the input."
    )


class Prompts:
    """A batch's rows as an engine reads them: the prompt text (rendered from messages), options and sinks."""

    def __init__(self, table: pa.Table, tokenizer: Any) -> None:
        def column(name: str) -> list[Any]:  # a step before the model may have left an option out
            return table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows

        self.texts: list[str | None] = []
        self.errors: list[str | None] = []
        for prompt, messages in zip(column("prompt"), column("messages"), strict=True):
            error = None
            if prompt is None and messages is not None:
                try:
                    prompt = render_messages(messages, tokenizer)
                except ValueError as exc:
                    error = str(exc)
            self.texts.append(prompt)
            self.errors.append(error)
        self.limits: list[int | None] = column("max_tokens")
        self.temperatures = [1.0 if t is None else float(t) for t in column("temperature")]
        self.sinks: list[str | None] = column("stream_id")


def admitted(
    prompts: Prompts, result: Generated, tokenize: Callable[[str], list[int]], context: int
) -> list[tuple[int, list[int], int]]:
    """The rows that can run, as (row, prompt tokens, max tokens: the call's, else as many as fit up to the
    default); every other row refused in `result`, with why (bad messages, no prompt, past the context)."""
    ready = []
    for i, text in enumerate(prompts.texts):
        ids = tokenize(text) if text is not None else []
        error = prompts.errors[i] or context_error(len(ids), prompts.limits[i], context, text is None)
        if error is not None:
            result.refuse(i, len(ids), error)
        else:
            result.tokens_in[i] = len(ids)
            ready.append((i, ids, prompts.limits[i] or min(DEFAULT_MAX_TOKENS, context - len(ids))))
    return ready


class Generated:
    """Per-row results of a batch, filled as the engine decodes, turned into the output table at the end."""

    def __init__(self, rows: int, started: float) -> None:
        self.started = started
        self.completion: list[str | None] = [None] * rows
        self.finish: list[str] = ["error"] * rows
        self.tokens_in = [0] * rows
        self.tokens_out = [0] * rows
        self.first: list[float | None] = [None] * rows
        self.last: list[float | None] = [None] * rows
        self.error: list[str | None] = [None] * rows

    def refuse(self, row: int, tokens_in: int, error: str) -> None:
        self.tokens_in[row], self.error[row], self.finish[row] = tokens_in, error, "error"

    def table(self) -> pa.Table:
        ttft = [None if f is None else (f - self.started) * 1000.0 for f in self.first]
        rate = [
            None if f is None or last is None else n / max(last - self.started, 1e-9)
            for f, last, n in zip(self.first, self.last, self.tokens_out, strict=True)
        ]
        return pa.Table.from_pydict(
            {
                "completion": self.completion,
                "finish_reason": self.finish,
                "tokens_in": self.tokens_in,
                "tokens_out": self.tokens_out,
                "ttft_ms": ttft,
                "tokens_per_s": rate,
                "error": self.error,
            },
            schema=_OUTPUTS,
        )


_OUTPUTS = pa.schema([(c.name, c.arrow_type()) for c in GENERATION_SCHEMA.outputs])


class Followed:
    """Each row's tokens as an engine decodes them: when its first came and when it stopped (at an end-of-sequence
    token or its `max_tokens`), its new text pushed to its sink (whole characters only), its completion at `end`.
    `decode` turns a row's tokens into text, without special tokens."""

    def __init__(
        self,
        rows: list[int],
        limits: list[int],
        eos: set[int],
        decode: Callable[[list[int]], str],
        sinks: list[str | None],
        result: Generated,
    ) -> None:
        self.rows, self.limits, self.eos, self.decode, self.result = rows, limits, eos, decode, result
        self.pushes = [SINKS.get(s) for s in sinks]
        self.tokens: list[list[int]] = [[] for _ in rows]
        self.sent = [""] * len(rows)
        self.done = [False] * len(rows)
        self.stopped = [False] * len(rows)

    def token(self, j: int, token: int, at: float) -> None:
        """Row `j` (of this group) decoded `token` at `at` (`time.perf_counter`); nothing once the row is done."""
        if self.done[j]:
            return
        row = self.rows[j]
        if self.result.first[row] is None:
            self.result.first[row] = at
        self.tokens[j].append(token)
        if token in self.eos:
            self.done[j] = self.stopped[j] = True
        elif len(self.tokens[j]) >= self.limits[j]:
            self.done[j] = True
        if self.done[j]:
            self.result.last[row] = at
        push = self.pushes[j]
        if push is not None:
            text = self.decode(self.tokens[j])
            if len(text) > len(self.sent[j]) and not text.endswith("\ufffd"):  # wait for a whole character
                push(text[len(self.sent[j]) :])
                self.sent[j] = text

    def end(self) -> None:
        at = time.perf_counter()
        for j, row in enumerate(self.rows):
            result = self.result
            result.completion[row] = self.decode(self.tokens[j])
            result.tokens_out[row] = len(self.tokens[j])
            result.finish[row] = "stop" if self.stopped[j] else "length"
            if result.last[row] is None:
                result.last[row] = at


class TokenSinks:
    """Where a streaming client waits for text: the OpenAI surface opens a sink under a fresh id, sends the id in
    the row's `stream_id`, and the engine, decoding in a worker thread, pushes each new piece of text to it."""

    def __init__(self) -> None:
        self._sinks: dict[str, Callable[[str], None]] = {}
        self._lock = threading.Lock()

    def open(self, sink_id: str, push: Callable[[str], None]) -> None:
        with self._lock:
            self._sinks[sink_id] = push

    def close(self, sink_id: str) -> None:
        with self._lock:
            self._sinks.pop(sink_id, None)

    def get(self, sink_id: str | None) -> Callable[[str], None] | None:
        if sink_id is None:
            return None
        with self._lock:
            return self._sinks.get(sink_id)


SINKS = TokenSinks()
"""This process's sinks (a streamed call is decoded in the process that serves it, on the local backend)."""
