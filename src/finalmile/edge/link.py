"""An edge site's link home: its sealed log parts pushed to the central server, new versions pulled from it.

`finalmile serve --upstream URL --upstream-token T --site NAME` runs `EdgeLink.tick` every few seconds. The edge
serves and logs locally whatever the link does; the link only moves files.

Pushing: every sealed Parquet part of the local log (the writer renames a part into place once complete, and never
rewrites it) is sent once, with its sha256, to `POST /edge/logs`; the central server stores it under a name made of
the site and the hash, so a part sent twice is stored once. A part is written into the ledger (`edge/pushed`, one
line per part, fsynced) only after the server said it has it, so a crash mid-push loses nothing (the part is sent
again) and duplicates nothing (the server already has it). Offline, parts wait on disk.

Bounded disk: when the local log grows past `edge_max_log_mb`, the oldest parts already pushed are deleted first;
only if that is not enough (the link has been down long) are the oldest parts not yet pushed deleted, each counted in
`edge/dropped` and reported home at the next contact. Newer rows are kept over older ones.

Pulling: the central server's deployed version of each bundled pipeline (`GET /edge/pipelines/{name}`); a new one is
downloaded artifact by artifact, each checked against its sha256, installed, warmed and swapped in by the ordinary
deploy (the old version serves until the new one is warm). A version that fails keeps the old one serving; the error
goes home (`POST /edge/sites/{site}/report`) and that version is not tried again until the server deploys another.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from finalmile.edge.bundle import Manifest, install

log = logging.getLogger(__name__)
PART_GLOB = "pipeline=*/date=*/part-*.parquet"


@dataclass
class LinkState:
    """What the link did lately, for `/metrics` and the reports it sends home."""

    pushed: int = 0
    dropped: int = 0
    offline_since: float | None = None
    last_error: str | None = None
    failed_versions: dict[str, int] = field(default_factory=dict)


class EdgeLink:
    """One edge site's push of log parts and pull of versions, over one HTTP client."""

    def __init__(
        self,
        services: Any,
        upstream: str,
        token: str | None,
        site: str,
        pipelines: list[str],
        max_log_bytes: int,
        http: httpx.Client | None = None,
    ) -> None:
        self.services = services
        self.site = site
        self.pipelines = pipelines
        self.max_log_bytes = max_log_bytes
        self.logs = Path(services.logs.root)
        self.home = Path(services.settings.home) / "edge"
        self.home.mkdir(parents=True, exist_ok=True)
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.http = http or httpx.Client(base_url=upstream.rstrip("/"), headers=headers, timeout=30.0)
        self.state = LinkState()

    def close(self) -> None:
        self.http.close()

    def tick(self) -> None:
        """Push what waits, bound the disk, pull new versions: each step on its own, so one failing skips nothing."""
        for step in (self.push, self.bound_disk, self.pull):
            try:
                step()
            except httpx.TransportError as exc:  # offline: try again next tick
                self.state.last_error = f"upstream unreachable: {exc}"
            except Exception as exc:  # noqa: BLE001 - the link must never stop the edge serving
                self.state.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("edge link: %s", self.state.last_error)

    # -- push ---------------------------------------------------------------------------------------------------

    def pending(self) -> list[Path]:
        done = self._ledger()
        parts = [p for p in self.logs.glob(PART_GLOB) if str(p.relative_to(self.logs)) not in done]
        return sorted(parts, key=lambda p: (p.stat().st_mtime, p.name))

    def push(self) -> int:
        """Send every part not yet in the ledger; stops at the first refusal (a wrong token says so once)."""
        sent = 0
        for part in self.pending():
            data = part.read_bytes()
            pipeline = part.parent.parent.name.removeprefix("pipeline=")
            date = part.parent.name.removeprefix("date=")
            params = {"site": self.site, "pipeline": pipeline, "date": date, "sha256": _sha(data)}
            answer = self.http.post("/edge/logs", params=params, content=data)
            if answer.status_code >= 400:
                self.state.last_error = f"upstream refused a log part ({answer.status_code}): {_message(answer)}"
                log.warning("edge link: %s", self.state.last_error)
                return sent
            self._record(str(part.relative_to(self.logs)))
            sent += 1
            self.state.pushed += 1
        return sent

    def _ledger(self) -> set[str]:
        path = self.home / "pushed"
        return set(path.read_text().splitlines()) if path.exists() else set()

    def _record(self, relative: str) -> None:
        with (self.home / "pushed").open("a") as ledger:
            ledger.write(relative + "\n")
            ledger.flush()
            os.fsync(ledger.fileno())

    def bound_disk(self) -> None:
        """Keep the local log under its bound: pushed parts go first, then (the link down long) the oldest unpushed."""
        parts = sorted(self.logs.glob(PART_GLOB), key=lambda p: (p.stat().st_mtime, p.name))
        total = sum(p.stat().st_size for p in parts)
        if total <= self.max_log_bytes:
            return
        done = self._ledger()
        pushed = [p for p in parts if str(p.relative_to(self.logs)) in done]
        for part in pushed + [p for p in parts if p not in pushed]:
            if total <= self.max_log_bytes:
                break
            size = part.stat().st_size
            if part not in pushed:
                self.state.dropped += 1
                with (self.home / "dropped").open("a") as dropped:
                    dropped.write(f"{part.relative_to(self.logs)}\n")
                log.warning("edge link: the local log is over its bound and upstream unreachable: dropped %s", part)
            part.unlink(missing_ok=True)
            total -= size

    # -- pull ---------------------------------------------------------------------------------------------------

    def pull(self) -> None:
        for pipeline in self.pipelines:
            answer = self.http.get(f"/edge/pipelines/{pipeline}")
            if answer.status_code >= 400:
                self.state.last_error = f"upstream has no version of {pipeline} ({answer.status_code})"
                continue
            manifest = Manifest.from_json(answer.json())
            deployed = self.services.pipelines.deployment(pipeline)
            if deployed is not None and deployed.version == manifest.version:
                continue
            if self.state.failed_versions.get(pipeline) == manifest.version:
                continue  # it failed here already: the old version serves until the server deploys another
            self._update(manifest)

    def _update(self, manifest: Manifest) -> None:
        with tempfile.TemporaryDirectory(dir=self.home) as scratch:

            def fetch(sha: str) -> Path:
                target = Path(scratch) / sha
                with self.http.stream("GET", f"/edge/artifacts/{sha}") as answer:
                    answer.raise_for_status()
                    with target.open("wb") as out:
                        for chunk in answer.iter_bytes():
                            out.write(chunk)
                return target

            try:
                install(self.services, manifest, fetch)
                self.services.deploy(manifest.pipeline, manifest.version, actor=f"edge:{self.site}")
            except Exception as exc:  # noqa: BLE001 - whatever failed, the old version keeps serving
                self.state.failed_versions[manifest.pipeline] = manifest.version
                self.report(manifest.pipeline, manifest.version, "failed", f"{type(exc).__name__}: {exc}")
                return
        self.report(manifest.pipeline, manifest.version, "serving", None)

    def report(self, pipeline: str, version: int, state: str, error: str | None) -> None:
        body = {"pipeline": pipeline, "version": version, "state": state, "error": error}
        body |= {"pushed": self.state.pushed, "dropped": self.state.dropped}
        try:
            self.http.post(f"/edge/sites/{self.site}/report", json=body)
        except httpx.TransportError:
            pass  # reported again with the next version


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _message(answer: httpx.Response) -> str:
    try:
        return str(answer.json().get("error", answer.text))
    except ValueError:
        return answer.text[:200]
