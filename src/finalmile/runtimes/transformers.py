"""Hugging Face models: a directory of `config.json`, safetensors weights and tokenizer files, run with transformers.

A causal language model generates (`task="text-generation"`); any other architecture embeds (`task="embedding"`,
the mean of the last hidden states, L2-normalised). Rows are prompts, so a batch the adaptive batcher coalesced from
concurrent requests is decoded together: the waiting prompts share every forward pass (left-padded), which is where a
CPU's throughput comes from (`bench/generation.py`). Nothing is downloaded: files come from the upload only, and the
model's own Python (`trust_remote_code`) never runs.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import transformers
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, StoppingCriteria

from finalmile.errors import InvalidModelError
from finalmile.runtimes import is_hugging_face_directory
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
from finalmile.schema import Schema

FRAMEWORK = "transformers"
MAX_DECODE_ROWS = 32
"""Rows decoded in one forward pass at most: a replay hands thousands of logged prompts at once, and the padded
batch and its key/value cache grow with every row."""
_COPIED = {".json", ".safetensors", ".jinja", ".txt", ".model"}
"""What a model directory needs: configs, safetensors weights, tokenizer files (`vocab.txt`, `merges.txt`,
SentencePiece `.model`) and a chat template; pickled `.bin` weights and `.py` files are not copied."""


def package(source: Any, workdir: Path, sample: pa.Table | None) -> Packaged:
    if not isinstance(source, (str, Path)) or not is_hugging_face_directory(Path(source)):
        raise InvalidModelError(
            "a transformers model is uploaded as its directory: config.json, *.safetensors weights and the "
            "tokenizer's files (save_pretrained writes them)"
        )
    out = workdir / "transformers"
    out.mkdir()
    for file in sorted(Path(source).iterdir()):
        if file.is_file() and file.suffix in _COPIED:
            shutil.copyfile(file, out / file.name)
    if not any(out.glob("*.safetensors")):
        raise InvalidModelError(
            f"{source}: no *.safetensors weights; save the model with save_pretrained(safe_serialization=True) "
            "(pickled .bin weights are not loaded)",
            {"path": str(source)},
        )
    task = GENERATION if _is_causal(out) else EMBEDDING
    runtime = TransformersRuntime.from_directory(out, task)
    smoke(runtime)  # a model that does not run is refused at upload, not at deploy
    return Packaged(FRAMEWORK, out, runtime.schema, task=task)


def _is_causal(directory: Path) -> bool:
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise InvalidModelError(f"config.json: not readable JSON ({exc})") from None
    return any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in config.get("architectures") or [])


class TransformersRuntime(BaseRuntime):
    """Generation or embedding with transformers on the CPU (CUDA when torch sees a GPU)."""

    framework = FRAMEWORK

    @classmethod
    def from_directory(cls, directory: Path, task: str) -> TransformersRuntime:
        """Loaded from a directory at upload, before the registry knows it (its schema is learnt here)."""
        from finalmile.config import FinalmileSettings

        runtime = cls(RuntimeContext(directory, Schema(inputs=None), task, None, FinalmileSettings()))
        runtime.load()
        return runtime

    def _load(self) -> None:
        transformers.utils.logging.disable_progress_bar()
        directory = self.context.artifact
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
            loader = AutoModelForCausalLM if self.context.task == GENERATION else AutoModel
            self.model = loader.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
        except Exception as exc:
            raise InvalidModelError(f"transformers could not load the model: {type(exc).__name__}: {exc}") from None
        self.model = self.model.to(self.device).eval()  # type: ignore[arg-type]
        # Generation continues from the right end of every row (generate places positions by the mask); an
        # encoder reads positions from 0, so its padding goes to the right.
        self.tokenizer.padding_side = "left" if self.context.task == GENERATION else "right"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        config = self.model.config
        self.context_length = int(
            getattr(config, "max_position_embeddings", None)
            or getattr(config, "n_positions", None)
            or min(self.tokenizer.model_max_length, 1 << 20)
        )
        eos = self.model.generation_config.eos_token_id if self.context.task == GENERATION else None
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            self.eos_ids.add(self.tokenizer.eos_token_id)
        self._lock = threading.Lock()
        """One forward pass at a time: torch already uses every core for one batch."""
        if self.schema.inputs is None:
            width = int(getattr(config, "hidden_size", 0) or 0)
            self.schema = GENERATION_SCHEMA if self.context.task == GENERATION else embedding_schema(width)

    def _predict(self, table: pa.Table) -> pa.Table:
        with self._lock, torch.inference_mode():
            return self._generate(table) if self.context.task == GENERATION else self._embed(table)

    def _generate(self, table: pa.Table) -> pa.Table:
        result = Generated(table.num_rows, time.perf_counter())
        prompts = Prompts(table, self.tokenizer)
        ready = admitted(prompts, result, lambda text: self.tokenizer(text)["input_ids"], self.context_length)
        groups: dict[float, list[tuple[int, list[int], int]]] = {}
        for row in ready:  # rows of one temperature decode together
            groups.setdefault(prompts.temperatures[row[0]], []).append(row)
        for temperature, group in groups.items():
            for start in range(0, len(group), MAX_DECODE_ROWS):
                part = group[start : start + MAX_DECODE_ROWS]
                self._decode([i for i, _, _ in part], [ids for _, ids, _ in part], [limit for _, _, limit in part],
                             temperature, prompts.sinks, result)  # fmt: skip
        return result.table()

    def _decode(
        self,
        rows: list[int],
        encoded: list[list[int]],
        limits: list[int],
        temperature: float,
        sinks: list[str | None],
        result: Generated,
    ) -> None:
        width = max(len(ids) for ids in encoded)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, row_ids in enumerate(encoded):
            ids[j, width - len(row_ids) :] = torch.tensor(row_ids, dtype=torch.long)
            mask[j, width - len(row_ids) :] = 1
        watcher = _Watcher(rows, limits, self.eos_ids, self._text, [sinks[i] for i in rows], result)
        sampling: dict[str, Any] = {"do_sample": False}
        if temperature > 0:
            sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
        self.model.generate(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            max_new_tokens=max(limits),
            streamer=watcher,
            stopping_criteria=[_RowLimits(watcher)],
            pad_token_id=pad,
            **sampling,
        )
        watcher.end()

    def _text(self, tokens: list[int]) -> str:
        return str(self.tokenizer.decode(tokens, skip_special_tokens=True))

    def _embed(self, table: pa.Table) -> pa.Table:
        texts = [t if t is not None else "" for t in table.column("text").to_pylist()]
        ids = self.tokenizer(texts)["input_ids"]
        lengths = [len(row) for row in ids]
        errors = [input_error(n, self.context_length) for n in lengths]
        good = [i for i, e in enumerate(errors) if e is None]
        width = int(self.model.config.hidden_size)
        vectors = np.zeros((len(texts), width), dtype=np.float32)
        if good:  # a text past the limit fails alone: its batch-mates are embedded without it
            kept = {"input_ids": [ids[i] for i in good]}  # tokenised once: padded as they are
            encoded = self.tokenizer.pad(kept, padding=True, return_tensors="pt").to(self.device)
            hidden = self.model(**encoded).last_hidden_state
            weights = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
            vectors[good] = torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()
        return embedding_table(vectors, lengths, errors)


class _Watcher(Followed):
    """Follows `generate` step by step (it is handed as the streamer): each step's token of every row."""

    _prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate hands the prompts first
            self._prompt_seen = True
            return
        at = time.perf_counter()
        for j, token in enumerate(value.tolist()):
            self.token(j, token, at)


class _RowLimits(StoppingCriteria):
    """Stops each row at its own `max_tokens`, so a short call in a batch never decodes as long as its longest."""

    def __init__(self, watcher: _Watcher) -> None:
        self.watcher = watcher

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        return torch.tensor(self.watcher.done, dtype=torch.bool, device=input_ids.device)
