"""Tiny models and data the tests build for themselves (nothing is downloaded)."""

from __future__ import annotations

import time

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


_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world, how are you today?",
    "finalmile serves models fast and logs every call",
    "contact me at someone@example.com or call 555 0100",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def tiny_language_models(directory, context: int = 128, width: int = 32, layers: int = 2):  # type: ignore[no-untyped-def]
    """A randomly initialised GPT-2 causal LM and a GPT-2 encoder (an embedding model) with a byte-level BPE
    tokenizer trained here, saved as Hugging Face directories: nothing is downloaded. Returns (causal, encoder)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(_CORPUS * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>", unk_token="<unk>", pad_token="<eos>")
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=context, n_embd=width, n_layer=layers, n_head=4,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    saved = []
    for name, model in (("causal", GPT2LMHeadModel(config)), ("encoder", GPT2Model(config))):
        path = directory / name
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        saved.append(path)
    return saved[0], saved[1]
