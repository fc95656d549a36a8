"""The edge link's promises, each forced: a crash after the central server stored a part but before the ledger
said so sends it again and it is stored once; a part that never arrived is sent again; past the disk bound, parts
already home go first, then the oldest unpushed, counted; a version is installed only when every artifact's bytes
hash right."""

from __future__ import annotations

from pathlib import Path

import pytest
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from finalmile.edge.bundle import install, manifest_of
from finalmile.edge.link import PART_GLOB, EdgeLink
from finalmile.errors import IntegrityError
from finalmile.http.server import running_server
from tests.fixtures import tabular

X, y = tabular(200)


def _edge(tmp_path: Path, name: str, requests: int) -> Client:
    """A store that served `requests` one-row requests, each flushed into a sealed part of its own."""
    client = Client(home=tmp_path / name)
    client.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(10))
    pipeline = client.build_pipeline("p").add_model_step("m:1")
    pipeline.deploy(durability="strict")
    for i in range(requests):
        pipeline.infer(X.iloc[[i]])
        client.services.logs.flush()
        client.services.logs._compact_all()  # a sealed part per request
    return client


def _central_rows(central: Client) -> int:
    frame = central.query("SELECT count(*) AS n FROM logs WHERE site = 'shop'")
    return int(frame.n[0])


def test_a_crash_between_storing_and_the_ledger_sends_again_and_stores_once(tmp_path: Path) -> None:
    edge = _edge(tmp_path, "edge", 3)
    central = _edge(tmp_path, "central", 0)  # it has the pipeline: a part of one it does not have is refused
    with running_server(central.services, auth=False) as url:
        link = EdgeLink(edge.services, url, None, "shop", ["p"], 1 << 30)
        assert len(link.pending()) == 3
        original = link._record

        def crash(relative: str) -> None:
            raise OSError("killed before the ledger was written")

        link._record = crash  # type: ignore[method-assign]
        with pytest.raises(OSError):
            link.push()  # the first part reached the server; the ledger never heard
        link._record = original  # type: ignore[method-assign]
        assert len(link.pending()) == 3 and link.push() == 3 and link.pending() == []
        assert _central_rows(central) == 3  # the part sent twice is stored once
        stored = list((tmp_path / "central" / "logs").glob(PART_GLOB))
        assert len(stored) == 3 and all("part-edge-shop-" in p.name for p in stored)

        # a part cut short in transit never lands: its hash does not match, and it is sent again whole
        part = edge.services.logs.root
        data = next(Path(part).glob(PART_GLOB)).read_bytes()
        params = {"site": "shop", "pipeline": "p", "date": "2026-12-06", "sha256": "a" * 64}
        cut = link.http.post("/edge/logs", content=data[:-10], params=params)
        assert cut.status_code == 400 and "sha256" in cut.json()["error"]
        unknown = link.http.post("/edge/logs", content=data, params=params | {"pipeline": "nope"})
        assert unknown.status_code == 404 and "nope" in unknown.json()["error"]
        link.close()
    edge.close()
    central.close()


def test_past_the_disk_bound_parts_already_home_go_first_then_the_oldest(tmp_path: Path) -> None:
    edge = _edge(tmp_path, "edge", 6)
    parts = sorted(Path(edge.services.logs.root).glob(PART_GLOB), key=lambda p: (p.stat().st_mtime, p.name))
    size = parts[0].stat().st_size
    offline = EdgeLink(edge.services, "http://127.0.0.1:9", None, "shop", ["p"], int(size * 3.5))
    for part in parts[:2]:  # two parts reached home before the link went down
        offline._record(str(part.relative_to(offline.logs)))
    offline.tick()  # unreachable: nothing pushed, but the disk is bounded all the same
    left = sorted(Path(edge.services.logs.root).glob(PART_GLOB), key=lambda p: (p.stat().st_mtime, p.name))
    assert left == parts[3:]  # the two pushed ones went first, then the oldest unpushed one
    assert offline.state.dropped == 1 and (offline.home / "dropped").read_text().strip().endswith(parts[2].name)
    assert offline.state.last_error is not None and "unreachable" in offline.state.last_error
    offline.close()
    edge.close()


def test_a_version_is_installed_only_when_every_artifact_hashes_right(tmp_path: Path) -> None:
    source = _edge(tmp_path, "central", 0)
    manifest = manifest_of(source.services, "p", None)
    target = Client(home=tmp_path / "site")

    def tampered(sha: str) -> Path:
        path = tmp_path / sha
        path.write_bytes(source.services.artifacts.verified_path(sha).read_bytes() + b"!")
        return path

    with pytest.raises(IntegrityError):
        install(target.services, manifest, tampered)
    assert install(target.services, manifest, source.services.artifacts.verified_path)
    assert not install(target.services, manifest, source.services.artifacts.verified_path)  # already there
    assert target.services.metadata.get_version("m", 1).artifact_sha256 == manifest.models[0]["artifact_sha256"]
    source.close()
    target.close()
