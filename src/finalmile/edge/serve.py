"""Starting an edge from its bundle: the bundled version installed into the embedded store beside it and deployed,
unless the store already serves that version or a newer one (pulled from the central server since)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finalmile.backends.config import deployment_config
from finalmile.edge.bundle import install as install_manifest
from finalmile.edge.bundle import read_bundle


def install_bundle(services: Any, directory: Path) -> str:
    """Check the bundle (manifest and every artifact's hash), install and deploy it; the pipeline's name."""
    manifest = read_bundle(directory)

    def fetch(sha: str) -> Path:
        return directory / "artifacts" / "sha256" / sha[:2] / sha

    install_manifest(services, manifest, fetch)
    deployed = services.pipelines.deployment(manifest.pipeline)
    if deployed is None or deployed.version < manifest.version:
        services.deploy(manifest.pipeline, manifest.version, deployment_config(manifest.deployment), actor="bundle")
    return manifest.pipeline
