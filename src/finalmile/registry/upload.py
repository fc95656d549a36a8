"""Upload: turn a user's model into an immutable, verified version — or register nothing at all.

Everything that can fail (reading the model, inferring its schema, converting it) happens in a scratch directory
before anything is stored; artifacts are written only then, and removed again if the metadata insert fails, so a
failed upload leaves no row and no orphan artifact.
"""

from __future__ import annotations

import getpass
import platform
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from pydantic import ValidationError

from finalmile.arrow.frames import named_rows, to_arrow
from finalmile.config import FinalmileSettings
from finalmile.errors import BadRequestError, FinalmileError, InvalidInputError
from finalmile.registry.artifacts import ArtifactStore, pack_directory
from finalmile.registry.store import MetadataStore, NewVersion, VersionRecord, check_alias_name, check_model_name
from finalmile.runtimes import CONVERTIBLE, DIRECTORY_FRAMEWORKS, detect_framework, framework_module
from finalmile.runtimes.base import Packaged
from finalmile.runtimes.convert import Conversion, convert
from finalmile.runtimes.selection import fastest
from finalmile.schema import Schema, SchemaValidator

_LIBRARIES = {
    "sklearn": ["scikit-learn", "skl2onnx"],
    "xgboost": ["xgboost", "onnxmltools"],
    "lightgbm": ["lightgbm", "onnxmltools"],
    "torch": ["torch"],
    "mlflow": ["mlflow-skinny", "mlflow"],
    "onnx": ["onnx"],
    "python": [],
    "transformers": ["transformers", "tokenizers", "torch"],
    "gguf": ["llama-cpp-python"],
}


Preparer = Callable[[FinalmileSettings, Path, Any, "str | None", "Schema | None", Any, str], "Prepared"]
"""What makes an upload ready in a scratch folder: (settings, workdir, source, framework, schema, sample, runtime)."""


def upload_model(
    store: MetadataStore,
    artifacts: ArtifactStore,
    settings: FinalmileSettings,
    name: str,
    source: Any,
    framework: str | None = None,
    schema: Schema | dict[str, Any] | None = None,
    sample: Any = None,
    alias: str | None = None,
    tags: dict[str, str] | None = None,
    runtime: str = "auto",
    preparer: Preparer | None = None,
) -> VersionRecord:
    """Register a version: every option checked before any of the model's own code can run, then `preparer`
    (default `prepare`, in this process; the server's runs in a sandboxed child, `registry/isolation.py`) makes it
    ready in a scratch folder, then it is stored."""
    tags = check_options(name, alias, tags, runtime)
    given = checked_schema(schema)
    artifacts.tmp.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=artifacts.tmp, prefix="upload-") as scratch, hide_paths(scratch):
        prepared = (preparer or prepare)(settings, Path(scratch), source, framework, given, sample, runtime)
        return store_prepared(store, artifacts, name, prepared, tags, settings.user or current_user(), alias)


def check_options(name: str, alias: str | None, tags: Any, runtime: str) -> dict[str, str] | None:
    """The options of an upload that need none of the model's code, checked first; the tags as stored."""
    if runtime not in ("auto", "native"):
        raise BadRequestError(f"runtime: must be 'auto' or 'native', got {runtime!r}", {"field": "runtime"})
    check_model_name(name)
    if alias is not None:
        check_alias_name(alias)
    return checked_tags(tags)


@dataclass
class Prepared:
    """An upload made ready in a scratch folder, nothing stored yet: the files to store and what was learnt."""

    new: NewVersion
    artifact: Path
    onnx: Path | None
    sample: Path | None


def prepare(
    settings: FinalmileSettings,
    workdir: Path,
    source: Any,
    framework: str | None,
    given: Schema | None,
    sample: Any,
    runtime: str,
) -> Prepared:
    """Everything of an upload that runs the model's code (unpickling, the sample, conversion and its parity),
    writing only in `workdir`: what a sandboxed upload runs in its child (`registry/isolation.py`)."""
    if isinstance(sample, np.ndarray):  # named as the model names its features
        names = getattr(source, "feature_names_in_", None)
        sample = named_rows(sample, [str(n) for n in names] if names is not None else None)
    sample_table = to_arrow(sample)[0] if sample is not None else None
    framework = framework or detect_framework(source)
    packaged: Packaged = framework_module(framework).package(source, workdir, sample_table)
    if given is not None:
        packaged.schema = Schema(inputs=given.inputs, outputs=given.outputs or packaged.schema.outputs)
    if sample_table is not None and packaged.schema.inputs is not None:
        # The sample must fit the schema; this also catches a sample of the wrong model early.
        sample_table = SchemaValidator(packaged.schema).conform(sample_table)
    conversion = Conversion("skipped", "kept native: only tree and linear models are converted")
    onnx_path = None
    if framework in CONVERTIBLE:
        if runtime == "native":
            conversion = Conversion("skipped", "kept native: runtime='native' was requested")
        else:
            conversion, onnx_path = convert(packaged, sample_table, workdir, settings)
    artifact_file = packaged.artifact
    if framework in DIRECTORY_FRAMEWORKS:
        artifact_file = pack_directory(packaged.artifact, workdir / "artifact.tar")
    new_version = NewVersion(
        framework=framework,
        # A one-row request is the common case; a deployment with large batches may choose otherwise.
        runtime=fastest(conversion.timings_us, 1) if onnx_path is not None else framework,
        artifact_sha256="",
        onnx_sha256=None,
        sample_sha256=None,
        schema=packaged.schema.model_dump(mode="json"),
        task=packaged.task,
        classes=packaged.classes,
        conversion=conversion.to_dict(),
        libraries=_libraries(framework),
        tags={},
        created_by="",
    )
    sample_file = None
    if sample_table is not None:
        sample_file = workdir / "sample.parquet"
        pq.write_table(sample_table, sample_file)
    return Prepared(new_version, artifact_file, onnx_path, sample_file)


def store_prepared(
    store: MetadataStore,
    artifacts: ArtifactStore,
    name: str,
    prepared: Prepared,
    tags: dict[str, str] | None,
    created_by: str,
    alias: str | None,
) -> VersionRecord:
    """Store what `prepare` made: the artifacts first, then the version; on failure, no row and no orphan."""
    new = replace(prepared.new, tags={str(k): str(v) for k, v in (tags or {}).items()}, created_by=created_by)
    return _store(store, artifacts, name, new, prepared.artifact, prepared.onnx, prepared.sample, alias)


def _store(
    store: MetadataStore,
    artifacts: ArtifactStore,
    name: str,
    new: NewVersion,
    artifact_file: Path,
    onnx_path: Path | None,
    sample_file: Path | None,
    alias: str | None,
) -> VersionRecord:
    created: list[str] = []

    def put(path: Path) -> str:
        digest, is_new = artifacts.put_file(path)
        if is_new:
            created.append(digest)
        return digest

    try:
        fields = vars(new) | {"artifact_sha256": put(artifact_file)}
        if onnx_path is not None:
            fields["onnx_sha256"] = put(onnx_path)
        if sample_file is not None:
            fields["sample_sha256"] = put(sample_file)
        return store.create_version(name, NewVersion(**fields), alias=alias)
    except BaseException:
        for digest in created:
            if not store.artifact_in_use(digest):
                artifacts.delete(digest)
        raise


def _libraries(framework: str) -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ["finalmile", "numpy", "pyarrow", "onnxruntime", *_LIBRARIES.get(framework, [])]:
        try:
            found[package] = package_version(package)
        except PackageNotFoundError:
            continue
    return found


def checked_tags(tags: Any) -> dict[str, str] | None:
    """Tags are a mapping of names to text; numbers and booleans are written as text, anything else refused."""
    if tags is None:
        return None
    if not isinstance(tags, dict):
        raise InvalidInputError(
            f"tags: expected an object of name -> text, got {type(tags).__name__}", {"field": "tags"}
        )
    checked = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not key or not key.isprintable():
            raise InvalidInputError(f"tags: {key!r} is not a tag name", {"field": "tags"})
        if isinstance(value, (dict, list)) or value is None:
            raise InvalidInputError(f"tags.{key}: expected text, got {type(value).__name__}", {"field": f"tags.{key}"})
        checked[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return checked


def checked_schema(schema: Schema | dict[str, Any] | None) -> Schema | None:
    """A schema given as a dict, validated, its problems named by field."""
    if schema is None or isinstance(schema, Schema):
        return schema
    if not isinstance(schema, dict):
        raise InvalidInputError(
            f"schema: expected an object with inputs and outputs, got {type(schema).__name__}", {"field": "schema"}
        )
    try:
        return Schema.model_validate(schema)
    except ValidationError as exc:
        problems = [f"schema.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise InvalidInputError("; ".join(problems), {"field": "schema", "problems": problems}) from None


@contextmanager
def hide_paths(*paths: str | Path) -> Iterator[None]:
    """Errors raised inside say `model.pkl`, not where the server keeps its scratch files."""
    try:
        yield
    except FinalmileError as exc:
        for path in paths:
            exc.reword(exc.message.replace(str(path).rstrip("/") + "/", "").replace(str(path), "<upload>"))
        raise


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
