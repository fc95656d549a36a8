"""Runtimes, one module per framework, imported lazily so that a missing optional framework costs nothing.

Each framework module exposes `package(source, workdir, sample) -> Packaged` (turn a user's object or file into a
stored artifact, refusing anything that does not load) and a `*Runtime` class (load the artifact, predict on Arrow).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from finalmile.errors import InvalidModelError, MissingDependencyError

# framework -> (module, runtime class, the package it needs, the extra that installs it)
_FRAMEWORKS: dict[str, tuple[str, str, str, str | None]] = {
    "onnx": ("finalmile.runtimes.onnx", "OnnxRuntime", "onnxruntime", None),
    "sklearn": ("finalmile.runtimes.sklearn", "SklearnRuntime", "scikit-learn", None),
    "xgboost": ("finalmile.runtimes.xgboost", "XGBoostRuntime", "xgboost", "xgboost"),
    "lightgbm": ("finalmile.runtimes.lightgbm", "LightGBMRuntime", "lightgbm", "lightgbm"),
    "torch": ("finalmile.runtimes.torch", "TorchRuntime", "torch", "torch"),
    "python": ("finalmile.runtimes.python", "PythonRuntime", "finalmile", None),
    "mlflow": ("finalmile.runtimes.mlflow", "MLflowRuntime", "mlflow", "mlflow"),
    "transformers": ("finalmile.runtimes.transformers", "TransformersRuntime", "transformers", "llm"),
    "gguf": ("finalmile.runtimes.gguf", "GGUFRuntime", "llama-cpp-python", "llm"),
}
FRAMEWORKS = tuple(_FRAMEWORKS)
# These are stored as a packed directory; the others as the single file the framework reads.
DIRECTORY_FRAMEWORKS = frozenset({"mlflow", "python", "torch", "transformers"})
# Converted to ONNX at upload when the outputs match.
CONVERTIBLE = frozenset({"sklearn", "xgboost", "lightgbm"})

_SUFFIXES = {
    ".onnx": "onnx",
    ".joblib": "pickle",
    ".pkl": "pickle",
    ".pickle": "pickle",
    ".json": "xgboost",
    ".ubj": "xgboost",
    ".txt": "lightgbm",
    ".pt": "torch",
    ".pth": "torch",
    ".pt2": "torch",
    ".py": "python",
    ".gguf": "gguf",
}


def is_hugging_face_directory(path: Path) -> bool:
    """A Hugging Face model directory, as `save_pretrained` writes one: its `config.json` and tokenizer files."""
    return (path / "config.json").is_file() and any(
        (path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")
    )


def framework_module(framework: str) -> ModuleType:
    """The module of `framework`, or a `MissingDependencyError` naming the extra to install."""
    if framework not in _FRAMEWORKS:
        raise InvalidModelError(f"unknown framework '{framework}'; known: {', '.join(FRAMEWORKS)}")
    module, _, package, extra = _FRAMEWORKS[framework]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if extra is None:
            raise
        raise MissingDependencyError(package, extra) from exc


def framework_extra(framework: str) -> str | None:
    """The extra of `pip install 'finalmile[...]'` that runs `framework` (None: the base install does)."""
    return _FRAMEWORKS[framework][3] if framework in _FRAMEWORKS else None


def runtime_class(framework: str) -> type:
    return getattr(framework_module(framework), _FRAMEWORKS[framework][1])


def detect_framework(source: Any) -> str:
    """The framework of an in-memory model or a path, from its type or its file name; never guesses silently."""
    if isinstance(source, (str, Path)):
        return _detect_path(split_class_ref(str(source))[0])
    for cls in type(source).__mro__ if not isinstance(source, type) else source.__mro__:
        root = cls.__module__.split(".")[0]
        if root in ("xgboost", "lightgbm", "torch", "onnx"):
            return root
        if root == "sklearn":
            return "sklearn"
    if callable(getattr(source, "predict", None)):
        return "python"
    raise InvalidModelError(
        f"cannot tell the framework of a {type(source).__name__}: pass a model of a supported framework "
        f"({', '.join(FRAMEWORKS)}) or a class with a predict(self, frame) method"
    )


def _detect_path(path: Path) -> str:
    if not path.exists():
        raise InvalidModelError(f"{path}: no such file or directory", {"path": str(path)})
    if path.is_dir():
        if (path / "MLmodel").is_file():
            return "mlflow"
        if is_hugging_face_directory(path):
            return "transformers"
        if any(path.glob("*.py")):
            return "python"
        raise InvalidModelError(
            f"{path} is not a model directory: expected an MLflow model (an MLmodel file), a Hugging Face model "
            "(config.json and tokenizer files) or Python code with a class that has predict(self, frame)",
            {"path": str(path)},
        )
    kind = _SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise InvalidModelError(
            f"{path}: unknown model format '{path.suffix}'; known: {', '.join(sorted(_SUFFIXES))} "
            "(or pass framework=...)",
            {"path": str(path)},
        )
    if kind == "pickle":
        return detect_framework(load_pickle(path))
    return kind


def load_pickle(path: Path) -> Any:
    """A joblib or pickle file's object, with a clear error for a corrupt or truncated file."""
    import joblib

    try:
        return joblib.load(path)
    except Exception as exc:  # joblib/pickle raise many types for bad bytes
        raise InvalidModelError(f"{path}: not a readable joblib/pickle file ({type(exc).__name__}: {exc})") from None


def split_class_ref(ref: str) -> tuple[Path, str | None]:
    """`model.py:Scorer` -> (Path("model.py"), "Scorer"); a plain path -> (path, None)."""
    head, sep, tail = ref.rpartition(":")
    if sep and head.endswith(".py") and tail.isidentifier():
        return Path(head), tail
    return Path(ref), None
