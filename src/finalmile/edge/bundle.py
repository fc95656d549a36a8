"""Edge bundles: a pinned pipeline version with everything it needs to serve where there is no central server.

A bundle is a directory:

    bundle.json      the pipeline version (its pinned definition and deployment settings) and every model version it
                     pins, with the sha256 of each artifact — the manifest an edge checks before it serves
    artifacts/       the artifacts, content-addressed (`sha256/ab/abcd…`), as the store keeps them
    wheels/          finalmile and every package it needs, so `install.sh` needs no package index
    install.sh       a virtual environment beside the bundle from `wheels/` (`pip install --no-index`)
    serve.sh         `finalmile serve --bundle` on an embedded store beside the bundle (`home/`)
    Dockerfile       the same as an image (`finalmile bundle --image TAG` builds it where Docker is present)

The same manifest travels when an edge pulls a new version from its central server (`edge/pull.py`), so one
function (`install`) puts a version into an edge's store, whether it came in a bundle or over the wire.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from finalmile._version import __version__
from finalmile.errors import BadRequestError, ConflictError, IntegrityError, ModelNotFound, PipelineNotFound
from finalmile.pipelines.spec import pinned_models
from finalmile.registry.artifacts import sha256_file
from finalmile.registry.store import NewVersion
from finalmile.runtimes import framework_extra

FORMAT = 1
MANIFEST = "bundle.json"


@dataclass(frozen=True)
class Manifest:
    """A pipeline version and the model versions it pins, each artifact named by its sha256."""

    pipeline: str
    version: int
    spec: dict[str, Any]
    deployment: dict[str, Any]
    models: list[dict[str, Any]]
    finalmile: str = __version__
    format: int = FORMAT

    def artifacts(self) -> list[str]:
        found = []
        for model in self.models:
            found += [model[k] for k in ("artifact_sha256", "onnx_sha256", "sample_sha256") if model.get(k)]
        return list(dict.fromkeys(found))

    def extras(self) -> list[str]:
        return sorted({e for m in self.models if (e := framework_extra(m["framework"])) is not None})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        """A manifest read from a bundle or a central server; anything malformed is a 400 that says what."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BadRequestError(f"bundle: not a finalmile bundle manifest of format {FORMAT}", {"field": "bundle"})
        try:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except TypeError as exc:
            raise BadRequestError(f"bundle: the manifest is incomplete ({exc})", {"field": "bundle"}) from None


def manifest_of(services: Any, pipeline: str, version: int | None) -> Manifest:
    """The manifest of `pipeline` at `version` (default: the version deployed, else the latest)."""
    if version is None:
        deployed = services.pipelines.deployment(pipeline)
        version = deployed.version if deployed is not None else None
    record = services.pipelines.get_version(pipeline, version)
    deployment = services.pipelines.deployment(pipeline)
    config = dict(deployment.config) if deployment is not None else {}
    config.pop("backend", None)  # an edge serves on its own threads
    models = []
    for ref in pinned_models(record.spec):
        found = services.metadata.get_by_ref(ref)
        fields = {k: getattr(found, k) for k in NewVersion.__dataclass_fields__}
        models.append(fields | {"name": found.name, "version": found.version})
    return Manifest(record.name, record.version, record.spec, config, models)


def write_bundle(
    services: Any,
    pipeline: str,
    version: int | None,
    output: Path,
    wheels: bool = True,
    progress: Callable[[str], None] = lambda _: None,
) -> Manifest:
    """Write the bundle of `pipeline` into `output` (which must be empty or new)."""
    if output.exists() and any(output.iterdir()):
        raise BadRequestError(f"output: {output} is not empty", {"field": "output"})
    manifest = manifest_of(services, pipeline, version)
    output.mkdir(parents=True, exist_ok=True)
    for sha in manifest.artifacts():
        target = output / "artifacts" / "sha256" / sha[:2] / sha
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(services.artifacts.verified_path(sha), target)
    (output / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=2, default=str))
    requirement = f"finalmile[{','.join(manifest.extras())}]" if manifest.extras() else "finalmile"
    _write_scripts(output, requirement)
    if wheels:
        progress("collecting wheels")
        collect_wheels(output / "wheels", manifest.extras(), Path(services.settings.home) / "cache" / "wheels")
    return manifest


def collect_wheels(directory: Path, extras: list[str], cache: Path) -> None:
    """finalmile's wheel (built from this installation's source) and every dependency's, from the package index this
    machine uses, so the edge installs with no index at all. Kept in `cache` under a key of the source's files and
    the extras: the next bundle of the same code copies them (pip takes tens of seconds)."""
    source = _source_root()
    key = hashlib.sha256(repr((extras, _source_stamp(source))).encode()).hexdigest()[:16]
    kept = cache / key
    if not (kept / ".complete").exists():
        fresh = cache / f".{key}-{os.getpid()}"
        shutil.rmtree(fresh, ignore_errors=True)
        _pip_wheels(source, extras, fresh)
        (fresh / ".complete").touch()
        shutil.rmtree(kept, ignore_errors=True)
        os.replace(fresh, kept)
    directory.mkdir(parents=True, exist_ok=True)
    for wheel in kept.glob("*.whl"):
        shutil.copyfile(wheel, directory / wheel.name)


def _source_stamp(source: Path) -> list[tuple[str, int, int]]:
    code = [
        f for f in sorted((source / "src").rglob("*")) if "__pycache__" not in f.parts and ".egg-info" not in str(f)
    ]
    files = [source / "pyproject.toml", *code, source / "README.md"]
    return [(str(f.relative_to(source)), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]


def _pip_wheels(source: Path, extras: list[str], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:  # a clean copy: setuptools' build/ may hold stale files
        copy = Path(scratch) / "finalmile"
        copy.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copyfile(source / name, copy / name)
        shutil.copytree(source / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        target = f"{copy}[{','.join(extras)}]" if extras else str(copy)
        command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(directory), target]
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise BadRequestError(f"wheels: pip could not collect them: {done.stderr.strip()[-2000:]}", {"field": "wheels"})


def _source_root() -> Path:
    root = Path(__file__).resolve().parents[3]
    if not (root / "pyproject.toml").is_file():
        raise BadRequestError(
            "wheels: this finalmile is not installed from its source, so its wheel cannot be built; "
            "bundle with --no-wheels and install finalmile at the edge",
            {"field": "wheels"},
        )
    return root


_INSTALL = """#!/bin/sh
# Makes .venv beside this bundle from the bundled wheels: no package index is asked, and this machine's pip
# configuration (its indexes and find-links) is not read.
set -e
export PIP_CONFIG_FILE=/dev/null
HERE=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3}
"$PYTHON" -m venv "$HERE/.venv"
"$HERE/.venv/bin/pip" install --quiet --no-index --find-links "$HERE/wheels" '__REQUIREMENT__'
echo "installed: $HERE/.venv"
"""
_SERVE = """#!/bin/sh
# serve.sh [--port P] [--upstream URL --token T --site NAME] [other finalmile serve options]
# Serves the bundled pipeline on an embedded store beside the bundle; with --upstream, ships its logs home and
# takes new versions from there.
HERE=$(cd "$(dirname "$0")" && pwd)
FINALMILE=${FINALMILE:-$HERE/.venv/bin/finalmile}
ARGS=""
for arg in "$@"; do
  case "$arg" in --token) arg="--upstream-token" ;; --token=*) arg="--upstream-token=${arg#--token=}" ;; esac
  ARGS="$ARGS '$(printf %s "$arg" | sed "s/'/'\\\\''/g")'"
done
export FINALMILE_HOME="${FINALMILE_HOME:-$HERE/home}"
eval exec "\\"$FINALMILE\\"" serve --bundle "\\"$HERE\\"" $ARGS
"""
_DOCKERFILE = """FROM python:3.11-slim
COPY . /bundle
RUN /bundle/install.sh
EXPOSE 8000
ENTRYPOINT ["/bundle/serve.sh", "--host", "0.0.0.0", "--port", "8000"]
"""


def _write_scripts(output: Path, requirement: str) -> None:
    for name, text in (("install.sh", _INSTALL.replace("__REQUIREMENT__", requirement)), ("serve.sh", _SERVE)):
        (output / name).write_text(text)
        (output / name).chmod(0o755)
    (output / "Dockerfile").write_text(_DOCKERFILE)


def read_bundle(directory: Path) -> Manifest:
    """The manifest of a bundle, every artifact's bytes checked against its sha256 (a 400 naming what is wrong)."""
    path = directory / MANIFEST
    try:
        manifest = Manifest.from_json(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise BadRequestError(f"bundle: {path} cannot be read ({exc})", {"field": "bundle"}) from None
    for sha in manifest.artifacts():
        file = directory / "artifacts" / "sha256" / sha[:2] / sha
        actual = sha256_file(file) if file.is_file() else "<missing>"
        if actual != sha:
            raise IntegrityError(sha, actual, f"bundle {directory}")
    return manifest


def install(services: Any, manifest: Manifest, fetch: Callable[[str], Path]) -> bool:
    """Put a manifest's model versions and pipeline version into `services`' store with the central server's own
    numbers (so the rows it logs name the same versions), each artifact from `fetch(sha)` checked before it is
    stored. False when the store has that pipeline version already."""
    for model in manifest.models:
        try:
            services.metadata.get_version(model["name"], model["version"])
            continue
        except ModelNotFound:  # not there yet: install it
            pass
        fields = {k: model[k] for k in NewVersion.__dataclass_fields__}
        for key in ("artifact_sha256", "onnx_sha256", "sample_sha256"):
            sha = fields[key]
            if sha:
                stored, _ = services.artifacts.put_file(fetch(sha))
                if stored != sha:
                    services.artifacts.delete(stored)
                    raise IntegrityError(sha, stored, f"artifact of {model['name']}:{model['version']}")
        try:
            services.metadata.create_version(model["name"], NewVersion(**fields), number=model["version"])
        except ConflictError:
            pass  # another process of this edge installed it meanwhile
    try:
        services.pipelines.get_version(manifest.pipeline, manifest.version)
        return False
    except PipelineNotFound:  # not there yet
        pass
    refs = [(m["name"], m["version"]) for m in manifest.models]  # the versions the definition pins
    services.pipelines.create_version(manifest.pipeline, manifest.spec, refs, "edge", number=manifest.version)
    return True
