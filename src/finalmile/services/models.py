"""Registry verbs: upload, aliases, deleting a version — each recorded in the audit trail."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from finalmile.errors import FinalmileError
from finalmile.registry.artifacts import ArtifactStore
from finalmile.registry.isolation import upload_in_child
from finalmile.registry.store import MetadataStore, VersionRecord
from finalmile.registry.upload import upload_model
from finalmile.services.acting import Acting


class ModelVerbs(Acting):
    """Mixed into `Services`."""

    metadata: MetadataStore
    artifacts: ArtifactStore

    @property
    def store_home(self) -> Path:
        raise NotImplementedError

    def upload_model(
        self, name: str, source: Any, isolated: bool = False, actor: str | None = None, **options: Any
    ) -> VersionRecord:
        """Register a new version. `isolated` (the server's uploads) loads and checks it in a child process, so the
        uploaded code never runs in this one."""
        if isolated:
            record = upload_in_child(
                self.metadata, self.artifacts, self.settings, self.store_home, name, source, options
            )
        else:
            record = upload_model(self.metadata, self.artifacts, self.settings, name, source, **options)
        alias = f" (alias {options['alias']})" if options.get("alias") else ""
        self.changed(actor, "upload", f"model {name}", None, f"{name}:{record.version}{alias}")
        return record

    def set_alias(self, name: str, version: int, alias: str, actor: str | None = None) -> VersionRecord:
        """Point `alias` at `version`, moving it if it pointed elsewhere."""
        before = self._alias_target(name, alias)
        record = self.metadata.set_alias(name, version, alias)
        self.changed(actor, "alias", f"model {name}@{alias}", before, f"{name}:{version}")
        return record

    def delete_alias(self, name: str, alias: str, actor: str | None = None) -> None:
        before = self._alias_target(name, alias)
        self.metadata.delete_alias(name, alias)
        self.changed(actor, "delete alias", f"model {name}@{alias}", before, None)

    def _alias_target(self, name: str, alias: str) -> str | None:
        with contextlib.suppress(FinalmileError):
            return f"{name}:{self.metadata.get_by_ref(f'{name}@{alias}').version}"
        return None

    def delete_model_version(self, name: str, version: int, actor: str | None = None) -> None:
        """Delete a version and its artifacts (unless another version shares them); refused while pinned."""
        record = self.metadata.delete_version(name, version)
        for digest in (record.artifact_sha256, record.onnx_sha256, record.sample_sha256):
            if digest and not self.metadata.artifact_in_use(digest):
                self.artifacts.delete(digest)
        self.changed(actor, "delete", f"model {name}", f"{name}:{version}", None)
