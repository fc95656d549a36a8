from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from finalmile.errors import IntegrityError
from finalmile.registry.artifacts import ArtifactStore, pack_directory, sha256_file


def test_content_addressed_and_deduplicated(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    source = tmp_path / "model.bin"
    source.write_bytes(b"weights" * 1000)
    digest, created = store.put_file(source)
    assert digest == hashlib.sha256(source.read_bytes()).hexdigest()
    assert created
    assert store.path_of(digest) == tmp_path / "artifacts" / "sha256" / digest[:2] / digest
    assert store.put_file(source) == (digest, False)
    assert list((tmp_path / "artifacts" / "tmp").iterdir()) == []  # no temporary files left behind


def test_tampered_artifact_is_refused(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    source = tmp_path / "model.bin"
    source.write_bytes(b"original")
    digest, _ = store.put_file(source)
    path = store.path_of(digest)
    path.chmod(0o644)
    path.write_bytes(b"tampered")
    with pytest.raises(IntegrityError, match="corrupt or was tampered with"):
        store.verified_path(digest)
    path.unlink()
    with pytest.raises(IntegrityError):
        store.read_bytes(digest)


def test_directory_packing_is_deterministic(tmp_path: Path) -> None:
    for name in ("a", "b"):
        d = tmp_path / name
        (d / "sub").mkdir(parents=True)
        (d / "model.py").write_text("class M: pass\n")
        (d / "sub" / "data.txt").write_text("1,2,3")
    (tmp_path / "b" / "__pycache__").mkdir()
    (tmp_path / "b" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    first = sha256_file(pack_directory(tmp_path / "a", tmp_path / "a.tar"))
    second = sha256_file(pack_directory(tmp_path / "b", tmp_path / "b.tar"))
    assert first == second


def test_unpack_verifies_and_extracts_a_fresh_copy(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    d = tmp_path / "code"
    d.mkdir()
    (d / "model.py").write_text("x = 1\n")
    digest, _ = store.put_file(pack_directory(d, tmp_path / "code.tar"))
    first, second = store.unpack(digest), store.unpack(digest)
    assert first != second
    assert (first / "model.py").read_text() == (second / "model.py").read_text() == "x = 1\n"
