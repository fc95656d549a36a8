"""Plain Python models: a class with `predict(self, frame)` and optionally `load(self, directory)`.

The model is stored with its source: the module file that defines the class (or the whole directory the user
gave, with any data files), a manifest naming the class, and the pickled instance when one was uploaded. `predict`
receives a pandas DataFrame; `load` receives the directory the artifact was unpacked to.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import linecache
import pickle
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa

from finalmile.errors import InvalidModelError
from finalmile.runtimes import split_class_ref
from finalmile.runtimes.base import BaseRuntime, Packaged, outputs_to_table
from finalmile.schema import Schema, infer_schema

FRAMEWORK = "python"
MANIFEST = "finalmile-python.json"


def package(source: Any, workdir: Path, sample: pa.Table | None) -> Packaged:
    out = workdir / "python"
    instance = None
    if isinstance(source, (str, Path)):
        path, class_name = split_class_ref(str(source))
        if path.is_dir():
            shutil.copytree(path, out, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
            module_file = _entry_module(out, class_name)
        else:
            out.mkdir()
            module_file = out / path.name
            shutil.copyfile(path, module_file)
    else:
        cls = source if isinstance(source, type) else type(source)
        instance = None if isinstance(source, type) else source
        stem, text = class_source(cls)
        out.mkdir()
        module_file = out / f"{stem}.py"
        module_file.write_text(text)
        class_name = cls.__qualname__
    module = _import(module_file, "finalmile_upload")
    cls = _find_class(module, module_file, class_name)
    manifest: dict[str, Any] = {
        "module": module_file.stem,
        "class": cls.__qualname__,
        "instance": None,
        "pickled_module": type(instance).__module__ if instance is not None else None,
    }
    if instance is not None:
        try:
            (out / "instance.pkl").write_bytes(pickle.dumps(instance))
        except Exception as exc:
            raise InvalidModelError(
                f"cannot pickle the {cls.__name__} instance ({exc}); upload the class and restore state in load()"
            ) from None
        manifest["instance"] = "instance.pkl"
    (out / MANIFEST).write_text(json.dumps(manifest))
    if sample is None:
        return Packaged(FRAMEWORK, out, Schema(inputs=None))
    try:
        result = outputs_to_table(_call(instantiate(out), sample), sample.num_rows)
    except InvalidModelError:
        raise
    except Exception as exc:  # the user's code failed on the user's sample: nothing to register
        raise InvalidModelError(f"the model failed on the sample: {type(exc).__name__}: {exc}") from None
    return Packaged(
        FRAMEWORK, out, Schema(inputs=infer_schema(sample).inputs, outputs=infer_schema(result).inputs or [])
    )


def class_source(cls: type) -> tuple[str, str]:
    """The module name and source text to store for a class defined in a file, a script, or a notebook cell.

    A module file is stored whole. A script would run again (training, uploading…) when imported, and a notebook
    cell has no file at all (its text is in `linecache`, as IPython puts it there): for those we keep only the
    imports, functions and classes.
    """
    try:
        path = inspect.getsourcefile(cls)
    except TypeError:  # defined in __main__ of an interactive session, or in exec'd code
        path = None
    if path and path.endswith(".py") and Path(path).is_file():
        text = Path(path).read_text()
        return Path(path).stem, definitions_only(text) if cls.__module__ == "__main__" else text
    code_files = [f.__code__.co_filename for f in vars(cls).values() if hasattr(f, "__code__")]
    lines = linecache.getlines(code_files[0]) if code_files else []
    if not lines:
        raise InvalidModelError(f"cannot find the source of class {cls.__name__}; define it in a .py file")
    try:
        return "model", definitions_only("".join(lines))
    except SyntaxError as exc:
        raise InvalidModelError(f"cannot parse the source of class {cls.__name__}: {exc}") from None


def definitions_only(text: str) -> str:
    """The imports, functions and classes of a script, without the statements that would run on import."""
    tree = ast.parse(text)
    kept = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return "\n\n".join(ast.get_source_segment(text, node) or "" for node in tree.body if isinstance(node, kept)) + "\n"


def _entry_module(directory: Path, class_name: str | None) -> Path:
    candidates = []
    for file in sorted(directory.glob("*.py")):
        try:
            text = file.read_text()
        except UnicodeDecodeError:
            continue
        if "def predict" in text and (class_name is None or f"class {class_name}" in text):
            candidates.append(file)
    if len(candidates) != 1:
        found = ", ".join(c.name for c in candidates) or "none"
        raise InvalidModelError(
            f"{directory}: expected exactly one .py file defining a class with predict(self, frame), found {found};"
            " name it as 'dir/file.py:ClassName'"
        )
    return candidates[0]


def _import(path: Path, prefix: str) -> ModuleType:
    name = f"{prefix}_{abs(hash(str(path)))}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InvalidModelError(f"{path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))  # so the model's own helper modules import
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise InvalidModelError(f"{path.name}: importing it failed: {type(exc).__name__}: {exc}") from None
    finally:
        sys.path.remove(str(path.parent))
    sys.modules[name] = module
    return module


def _find_class(module: ModuleType, path: Path, class_name: str | None) -> type:
    if class_name is not None:
        cls = getattr(module, class_name.split(".")[0], None)
        for part in class_name.split(".")[1:]:
            cls = getattr(cls, part, None)
        if not isinstance(cls, type):
            raise InvalidModelError(f"{path.name}: no class named {class_name}")
    else:
        classes = [
            c
            for c in vars(module).values()
            if isinstance(c, type) and c.__module__ == module.__name__ and callable(getattr(c, "predict", None))
        ]
        if len(classes) != 1:
            names = ", ".join(c.__name__ for c in classes) or "none"
            raise InvalidModelError(
                f"{path.name}: expected exactly one class with predict(self, frame), found {names};"
                f" name it as '{path.name}:ClassName'"
            )
        cls = classes[0]
    if not callable(getattr(cls, "predict", None)):
        raise InvalidModelError(f"class {cls.__name__} has no predict(self, frame) method")
    return cls


class _ModuleUnpickler(pickle.Unpickler):
    """Resolves the instance's class in the stored module, whatever the module was called when it was pickled."""

    def __init__(self, file: Any, module: ModuleType, original: str) -> None:
        super().__init__(file)
        self.module = module
        self.original = original

    def find_class(self, module: str, name: str) -> Any:
        if module == self.original:
            return getattr(self.module, name)
        return super().find_class(module, name)


def instantiate(directory: Path) -> Any:
    """Import the stored module, build (or unpickle) the model, and call its `load(directory)` if it has one."""
    manifest = json.loads((directory / MANIFEST).read_text())
    module = _import(directory / f"{manifest['module']}.py", "finalmile_model")
    cls = _find_class(module, directory, manifest["class"])
    if manifest.get("instance"):
        with (directory / manifest["instance"]).open("rb") as f:
            model = _ModuleUnpickler(f, module, manifest["pickled_module"]).load()
    else:
        model = cls()
    if callable(getattr(model, "load", None)):
        model.load(directory)
    return model


def _call(model: Any, table: pa.Table) -> Any:
    return model.predict(table.to_pandas())


class PythonRuntime(BaseRuntime):
    """Plain Python: a class with `predict(self, frame)`, given pandas."""

    framework = FRAMEWORK
    needs_named_columns = True

    def _load(self) -> None:
        self.model = instantiate(self.context.artifact)

    def _predict(self, table: pa.Table) -> pa.Table:
        return outputs_to_table(_call(self.model, table), table.num_rows)
