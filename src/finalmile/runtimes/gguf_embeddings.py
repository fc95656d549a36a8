"""GGUF embedding models with llama.cpp (`runtimes.gguf` loads them): a context that pools each text's hidden
states into one vector, in the way the file names."""

from __future__ import annotations

import os
import threading
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import _internals as internals

from finalmile.errors import PredictionError

PROMPT_CHUNK = 512
"""Prompt tokens per `llama_decode` at most (llama.cpp's default batch)."""


def cpu_threads() -> int:
    """The cores this process may run on: llama.cpp's threads."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Embedder:
    """A context that pools each text's hidden states into one vector, in the way the file names (mean, the first
    or last token): texts are packed into one pass as they fit, one sequence each; one pass at a time."""

    def __init__(self, model: Any, rows: int, context_length: int) -> None:
        self.model, self.rows = model, rows
        self.room = max(context_length, PROMPT_CHUNK)
        """Tokens in one pass: every text that may run fits in one (a pooled sequence may not span two)."""
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = self.room
        params.n_seq_max = rows
        params.kv_unified = True
        params.embeddings = True
        threads = cpu_threads()
        params.n_threads = params.n_threads_batch = threads
        self.llama = internals.LlamaContext(model=model, params=params)
        if llama_cpp.llama_pooling_type(self.llama.ctx) == llama_cpp.LLAMA_POOLING_TYPE_NONE:
            self.llama.close()
            raise ValueError("the file names no pooling that makes one vector of a text")
        self.batch = internals.LlamaBatch(n_tokens=self.room, embd=0, n_seq_max=rows)
        self.width = int(model.n_embd())
        self._lock = threading.Lock()
        self._closed = False

    def embed(self, texts: list[list[int]]) -> np.ndarray:
        """One pooled vector per text (a text of no tokens: zeros)."""
        out = np.zeros((len(texts), self.width), dtype=np.float32)
        with self._lock:
            if self._closed:
                raise PredictionError("gguf model failed: it was unloaded")
            waiting = [i for i, t in enumerate(texts) if t]
            while waiting:
                packed: list[int] = []
                used = 0
                while waiting and len(packed) < self.rows and used + len(texts[waiting[0]]) <= self.room:
                    used += len(texts[waiting[0]])
                    packed.append(waiting.pop(0))
                self._pass([texts[i] for i in packed])
                for sequence, i in enumerate(packed):
                    pooled = self.llama.get_embeddings_seq(sequence)
                    out[i] = np.ctypeslib.as_array(pooled, shape=(self.width,))
                llama_cpp.llama_memory_clear(self.llama.memory, True)
        return out

    def _pass(self, texts: list[list[int]]) -> None:
        batch, at = self.batch.batch, 0
        for sequence, tokens in enumerate(texts):
            for position, token in enumerate(tokens):
                batch.token[at], batch.pos[at], batch.n_seq_id[at], batch.logits[at] = token, position, 1, True
                batch.seq_id[at][0] = sequence
                at += 1
        batch.n_tokens = at
        try:
            self.llama.decode(self.batch)
        except Exception as exc:
            llama_cpp.llama_memory_clear(self.llama.memory, True)
            raise PredictionError(f"gguf model failed: {type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self.batch.close()
                self.llama.close()
