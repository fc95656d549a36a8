"""Tiny models and data the tests build for themselves (nothing is downloaded)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

N_FEATURES = 6


def tabular(rows: int = 300, seed: int = 0, n_features: int = N_FEATURES) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.standard_normal((rows, n_features)), columns=[f"x{i}" for i in range(n_features)])
    y = pd.Series((X.x0 + 0.5 * X.x1 > 0).astype(np.int64), name="y")
    return X, y


def multiclass(rows: int = 300, seed: int = 1) -> tuple[pd.DataFrame, pd.Series]:
    X, _ = tabular(rows, seed)
    return X, pd.Series(np.digitize(X.x0, [-0.5, 0.5]), name="y")


class SumModel:
    """Returns the sum of its input columns."""

    def predict(self, frame: pd.DataFrame) -> pd.Series:
        return frame.sum(axis=1).rename("total")


class ScaledSumModel:
    """Keeps state: an instance is pickled with its factor."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"scaled": frame.sum(axis=1) * self.factor})


class ErrorModel:
    def predict(self, frame: pd.DataFrame) -> pd.Series:
        raise ValueError("this model always fails")


class PickyModel:
    """Sums its inputs, but refuses a batch with any first-column value over 50 (a request that fails its batch)."""

    def predict(self, frame: pd.DataFrame) -> pd.Series:
        if (frame.iloc[:, 0] > 50).any():
            raise ValueError("picky: a first-column value over 50")
        return frame.sum(axis=1).rename("total")


class BatchRowsModel:
    """Answers each row with the number of rows of the batch it ran in."""

    def predict(self, frame: pd.DataFrame) -> pd.Series:
        return pd.Series(np.full(len(frame), len(frame)), name="batch_rows")


class SleepModel:
    def predict(self, frame: pd.DataFrame) -> pd.Series:
        time.sleep(0.05)
        return pd.Series(np.zeros(len(frame)), name="prediction")


class NoPredict:
    def score(self, frame: pd.DataFrame) -> None:
        return None


class ThresholdClassifier(ClassifierMixin, BaseEstimator):
    """A scikit-learn classifier that skl2onnx has no converter for."""

    def fit(self, X: pd.DataFrame, y: pd.Series) -> ThresholdClassifier:
        self.classes_ = np.unique(y)
        self.n_features_in_ = X.shape[1]
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = 1 / (1 + np.exp(-np.asarray(X)[:, 0]))
        return np.column_stack([1 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class FlakyClassifier(ThresholdClassifier):
    """Fails any batch holding a row whose x0 is over 0.84: a fifth of standard-normal rows."""

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        if (np.asarray(X)[:, 0] > 0.84).any():
            raise ValueError("flaky: x0 over 0.84")
        return super().predict_proba(X)


class SlowClassifier(ThresholdClassifier):
    """The threshold classifier, 40 ms slower a batch."""

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        time.sleep(0.04)
        return super().predict_proba(X)


from finalmile.cli.demo.llm import gpt2_to_gguf, tiny_language_models  # noqa: E402,F401  (the demo makes the same models)


def mean_pooled(directory: Path, texts: list[str]) -> np.ndarray:
    """Each text's embedding as transformers computes it from a GPT-2 directory: the mean of the last hidden states,
    of unit length (what a GGUF of it marked with mean pooling must answer)."""
    import torch
    from transformers import AutoTokenizer, GPT2Model

    tokenizer, model = AutoTokenizer.from_pretrained(directory), GPT2Model.from_pretrained(directory).eval()
    out = []
    with torch.no_grad():
        for text in texts:
            hidden = model(torch.tensor([tokenizer(text)["input_ids"]])).last_hidden_state[0].mean(0).numpy()
            out.append(hidden / np.linalg.norm(hidden))
    return np.array(out)


def streamed(runtime: Any, sink: str) -> tuple[list[str], str]:
    """The pieces a generative runtime pushed to an open sink while it decoded "hello" (6 tokens, greedy), and the
    completion it answered."""
    from finalmile.runtimes.generation import SINKS, prompt_table

    pieces: list[str] = []
    SINKS.open(sink, pieces.append)
    try:
        out = runtime.predict(prompt_table(prompt=["hello"], max_tokens=[6], temperature=[0.0], stream_id=[sink]))
    finally:
        SINKS.close(sink)
    return pieces, str(out.column("completion")[0].as_py())


class OtlpReceiver:
    """An OTLP/HTTP endpoint on loopback keeping every body it is sent (`bodies`), answering 200: what a collector
    is to a traced server, for the tracing test and `bench/tracing.py`."""

    def __init__(self) -> None:
        import socket
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.bodies: list[bytes] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                bodies.append(self.rfile.read(int(self.headers["content-length"])))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
