"""The OpenAI API's requests and answers as finalmile rows, transport-free: a chat or completion call is one request
of prompt rows to a generative pipeline (`runtimes/generation.py` names the columns), an embeddings call one of text
rows. `http/routes/openai.py` is the thin HTTP adapter; everything checked here is a 400 that names the field.
"""

from __future__ import annotations

import base64
import time
from typing import Any, Literal

import orjson
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from finalmile.errors import BadRequestError
from finalmile.pipelines.loaded import RequestResult
from finalmile.pipelines.spec import CheckStepSpec, GuardrailStepSpec, ModelStepSpec, ShadowStepSpec, SplitStepSpec
from finalmile.runtimes.generation import GENERATION_SCHEMA

PROMPT_INPUTS = GENERATION_SCHEMA.input_arrow_schema()


class _Request(BaseModel):
    # OpenAI clients send options we do not act on (presence_penalty, user, …): accepted and ignored, as vLLM does.
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    stream: bool = False
    n: int = Field(default=1, ge=1, le=1, description="one choice per call")


class TextPart(BaseModel):
    """One text part of a message's content (clients may send content as a list of parts)."""

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One chat message; its text goes to the model's chat template."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    """`include_usage`: a last event with the call's token counts."""

    include_usage: bool = False


class ChatRequest(_Request):
    """`POST /v1/chat/completions`: one call, one row of messages."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    stream_options: StreamOptions | None = None

    def rows(self) -> dict[str, list[Any]]:
        messages = [{"role": m.role, "content": m.text()} for m in self.messages]
        limit = self.max_completion_tokens or self.max_tokens
        return _rows(None, orjson.dumps(messages).decode(), limit, self.temperature)


class CompletionRequest(_Request):
    """`POST /v1/completions`: a row per prompt, the legacy endpoint's 16 tokens by default."""

    prompt: str | list[str]
    max_tokens: int | None = Field(default=16, ge=1, le=1_000_000)  # the legacy endpoint's own default
    stream_options: StreamOptions | None = None

    def prompts(self) -> list[str]:
        prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        if not prompts:
            raise BadRequestError("prompt: expected text or a non-empty list of texts", {"field": "prompt"})
        if self.stream and len(prompts) > 1:
            raise BadRequestError("prompt: a streamed completion takes one prompt", {"field": "prompt"})
        return prompts


class EmbeddingRequest(BaseModel):
    """`POST /v1/embeddings`: a row per text."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"

    def texts(self) -> list[str]:
        texts = [self.input] if isinstance(self.input, str) else self.input
        if not texts:
            raise BadRequestError("input: expected text or a non-empty list of texts", {"field": "input"})
        return texts


def parse(model: type[BaseModel], body: bytes) -> Any:
    """The request body as `model`, or a 400 naming the first field at fault (the OpenAI API's `param`)."""
    try:
        return model.model_validate_json(body or b"null")
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(p) for p in problem["loc"]) or "body"
        raise BadRequestError(f"{field}: {problem['msg']}", {"field": field}) from None


def _rows(prompt: str | None, messages: str | None, limit: int | None, temperature: float | None) -> dict[str, Any]:
    return {
        "prompt": [prompt],
        "messages": [messages],
        "max_tokens": [limit],
        "temperature": [temperature],
        "stream_id": [None],
    }


def prompt_table(rows: list[dict[str, Any]]) -> pa.Table:
    columns = {name: [v for r in rows for v in r[name]] for name in PROMPT_INPUTS.names}
    return pa.Table.from_pydict(columns, schema=PROMPT_INPUTS)


def prompt_column(rows: list[dict[str, Any]]) -> str:
    """The input a call's rows need the pipeline to take: `prompt` for a completion, `messages` for a chat."""
    return "prompt" if rows[0]["prompt"][0] is not None else "messages"


def completion_rows(request: CompletionRequest) -> list[dict[str, Any]]:
    return [_rows(p, None, request.max_tokens, request.temperature) for p in request.prompts()]


def require_input(name: str, schema: Any, column: str) -> None:
    """A 400 naming `model` when the pipeline's first step does not take `column` (`messages` for chat, `prompt`
    for completions, `text` for embeddings): an embeddings call to a chat pipeline, a chat call to a classifier."""
    if schema is not None and schema.inputs is not None and column not in schema.input_names():
        kind = "an embedding" if column == "text" else "a generative"
        raise BadRequestError(
            f"model: pipeline '{name}' is not {kind} pipeline: it takes {', '.join(schema.input_names())}, "
            f"not '{column}'",
            {"field": "model"},
        )


def check_generative(name: str, result: RequestResult) -> list[dict[str, Any]]:
    """The rows of a generative pipeline's answer; a row the engine refused is the 400 it says why."""
    table = result.table
    missing = [c for c in ("completion", "finish_reason", "tokens_in", "tokens_out") if c not in table.column_names]
    if missing:
        raise BadRequestError(
            f"model: pipeline '{name}' is not a generative pipeline (its answer has no {', '.join(missing)})",
            {"field": "model"},
        )
    rows = table.select([c for c in table.column_names if c != "stream_id"]).to_pylist()
    for row in rows:
        if row.get("error"):
            field = "max_tokens" if row["error"].startswith("max_tokens") else "messages"
            code = "context_length_exceeded" if "context length" in row["error"] else None
            raise BadRequestError(row["error"], {"field": field, "code": code})
    return rows


def usage(rows: list[dict[str, Any]]) -> dict[str, int]:
    prompt = sum(int(r["tokens_in"]) for r in rows)
    completion = sum(int(r["tokens_out"]) for r in rows)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def answer(kind: str, name: str, result: RequestResult, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A whole answer: a chat completion (`kind` chat, one message per row) or a text completion (one text per
    prompt)."""
    if kind == "chat":
        head = {"id": f"chatcmpl-{result.request_id}", "object": "chat.completion"}
        choices: list[dict[str, Any]] = [
            {"message": {"role": "assistant", "content": r["completion"] or ""}} for r in rows
        ]
    else:
        head = {"id": f"cmpl-{result.request_id}", "object": "text_completion"}
        choices = [{"text": r["completion"] or ""} for r in rows]
    for i, (choice, row) in enumerate(zip(choices, rows, strict=True)):
        choice |= {"index": i, "finish_reason": row["finish_reason"], "logprobs": None}
    return head | {"created": int(time.time()), "model": name, "choices": choices, "usage": usage(rows)}


def chunk(kind: str, request_id: str, name: str, text: str | None, finish: str | None, first: bool) -> bytes:
    """One server-sent event of a streamed answer."""
    if kind == "chat":
        delta: dict[str, Any] = {"role": "assistant"} if first else {}
        if text:
            delta["content"] = text
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
    else:
        choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
    return event(_chunk_head(kind, request_id, name) | {"choices": [choice]})


def usage_chunk(kind: str, request_id: str, name: str, rows: list[dict[str, Any]]) -> bytes:
    """The last event of a stream that asked for `include_usage`: no choices, the call's token counts."""
    return event(_chunk_head(kind, request_id, name) | {"choices": [], "usage": usage(rows)})


def _chunk_head(kind: str, request_id: str, name: str) -> dict[str, Any]:
    if kind == "chat":
        return {"id": f"chatcmpl-{request_id}", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": name}  # fmt: skip
    return {"id": f"cmpl-{request_id}", "object": "text_completion", "created": int(time.time()), "model": name}


def event(body: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def embedding_answer(name: str, result: RequestResult, encoding: str) -> dict[str, Any]:
    table = result.table
    if "embedding" not in table.column_names:
        raise BadRequestError(
            f"model: pipeline '{name}' is not an embedding pipeline (its answer has no embedding)", {"field": "model"}
        )
    errors = table.column("error").to_pylist() if "error" in table.column_names else []
    for i, error in enumerate(errors):
        if error:
            raise BadRequestError(f"input[{i}]: {error}", {"field": "input", "code": "context_length_exceeded"})
    column = table.column("embedding").combine_chunks()
    width = column.type.list_size
    matrix = column.flatten().to_numpy(zero_copy_only=False).astype("<f4").reshape(-1, width)
    data = []
    for i, vector in enumerate(matrix):
        value: Any = base64.b64encode(vector.tobytes()).decode() if encoding == "base64" else vector.tolist()
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = int(sum(table.column("tokens_in").to_pylist())) if "tokens_in" in table.column_names else 0
    return {"object": "list", "data": data, "model": name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def streams_text(steps: list[Any], generative: Any) -> bool:
    """Whether text may go to the client as it is decoded: the last step that changes rows is the generative model
    (checks only flag). A step after it — a guardrail, a post-processing step — must see the whole text first, so
    then the answer is streamed as one piece once it is checked. `generative(ref)` says whether a model generates."""
    changing = [s for s in steps if not _only_flags(s)]
    if not changing:
        return False
    last = changing[-1]
    if isinstance(last, ModelStepSpec):
        return bool(generative(last.model))
    if isinstance(last, SplitStepSpec):
        return all(streams_text(list(v.steps), generative) for v in last.variants)
    if isinstance(last, ShadowStepSpec):
        return streams_text(list(last.champion), generative)
    return False


def _only_flags(step: Any) -> bool:
    return isinstance(step, CheckStepSpec) or (isinstance(step, GuardrailStepSpec) and step.action == "flag")
