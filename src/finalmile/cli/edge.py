"""`finalmile bundle`: a pipeline version as an edge bundle that serves offline (`edge/bundle.py`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Annotated

import typer

from finalmile.cli.common import client_from_env, console
from finalmile.errors import BadRequestError


def bundle(
    pipeline: Annotated[str, typer.Argument(help="PIPELINE or PIPELINE:VERSION (default: the deployed version).")],
    output: Annotated[Path, typer.Option(help="The bundle's directory (new or empty).")],
    wheels: Annotated[
        bool, typer.Option(help="Bundle the wheels of finalmile and its dependencies (--no-wheels: install it apart).")
    ] = True,
    image: Annotated[str | None, typer.Option(help="Also build a Docker image with this tag (needs docker).")] = None,
) -> None:
    """Write an edge bundle: the pinned version, its artifacts, wheels, install.sh, serve.sh and a Dockerfile."""
    name, _, version = pipeline.partition(":")
    if version and not version.isdigit():
        raise BadRequestError(f"pipeline: the version must be a number, got '{version}'", {"field": "pipeline"})
    with client_from_env() as client, console.status("bundling"):
        made = client.bundle_pipeline(name, output, int(version) if version else None, wheels)
    console.print(
        f"bundled {made['pipeline']}:{made['version']} ({', '.join(made['models'])}) in {output}: "
        f"{output}/install.sh, then {output}/serve.sh [--port P] [--upstream URL --token T --site NAME]"
    )
    if image is not None:
        if shutil.which("docker") is None:
            raise BadRequestError("--image: docker is not installed here; build the Dockerfile where it is")
        subprocess.run(["docker", "build", "-t", image, str(output)], check=True)
        console.print(f"built image {image}")
