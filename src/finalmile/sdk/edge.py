"""Edge bundles as the embedded client writes them (the remote client has the server write one and unpacks it)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from finalmile.sdk.refs import pipeline_name

if TYPE_CHECKING:
    from finalmile.services import Services


def bundle_summary(manifest: Any, output: Path) -> dict[str, Any]:
    """What a bundle holds, as both transports answer `bundle_pipeline`."""
    models = [f"{m['name']}:{m['version']}" for m in manifest.models]
    return {"pipeline": manifest.pipeline, "version": manifest.version, "models": models, "output": str(output)}


class EdgeVerbs:
    """Mixed into the embedded client."""

    services: Services

    def bundle_pipeline(
        self, name: Any, output: str | Path, version: int | None = None, wheels: bool = True
    ) -> dict[str, Any]:
        """Write an edge bundle of `name` (at `version`, default the deployed one) into `output`: the pinned
        version, its artifacts, the wheels to install it with no package index (`wheels=False`: install finalmile
        apart), `install.sh`, `serve.sh` and a Dockerfile (`edge/bundle.py`)."""
        from finalmile.edge.bundle import write_bundle

        manifest = write_bundle(self.services, pipeline_name(name), version, Path(output), wheels)
        return bundle_summary(manifest, Path(output))
