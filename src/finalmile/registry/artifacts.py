"""Content-addressed artifact store: `artifacts/sha256/ab/abcd…`, written atomically, verified on every read.

A model directory (MLflow, Python code with data) is stored as one deterministic tar, so that the same directory
always hashes the same and a version always points at exactly one immutable file.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from finalmile.errors import IntegrityError, InvalidModelError

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def pack_directory(directory: Path, dest: Path) -> Path:
    """Write `directory` as a tar with sorted names and zeroed times and owners, so equal content hashes equally."""
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in directory.rglob("*") if "__pycache__" not in p.parts):
            if path.is_symlink():
                raise InvalidModelError(f"{path}: symbolic links are not stored in model artifacts")
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(directory)))
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755 if path.is_dir() else 0o644
            if path.is_dir():
                tar.addfile(info)
            else:
                with path.open("rb") as f:
                    tar.addfile(info, f)
    return dest


class ArtifactStore:
    """Immutable files named by their sha256 under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"

    def path_of(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / sha256

    def put_file(self, source: Path) -> tuple[str, bool]:
        """Store a copy of `source`; returns its sha256 and whether this call created it (False if already stored)."""
        fd, tmp_name = self._staging()
        tmp = Path(tmp_name)
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, source.open("rb") as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            return self._place(tmp, h.hexdigest())
        finally:
            tmp.unlink(missing_ok=True)

    def put_written(self, write: Callable[[Path], None]) -> tuple[str, bool]:
        """Store the file `write(path)` makes: written in the store's staging area, hashed there and renamed into
        place, where `put_file` would copy it (a 232 MB baseline: one write instead of a write, a read and a copy,
        and nothing held in memory)."""
        fd, tmp_name = self._staging()
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            write(tmp)
            with tmp.open("rb+") as f:
                os.fsync(f.fileno())
            return self._place(tmp, sha256_file(tmp))
        finally:
            tmp.unlink(missing_ok=True)

    def _staging(self) -> tuple[int, str]:
        self.tmp.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(dir=self.tmp, prefix="put-")

    def scratch(self, prefix: str) -> Path:
        """A fresh directory under `tmp/` (on the store's disk, so what is made there moves in by a rename); the
        caller removes it."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=self.tmp, prefix=prefix))

    def _place(self, tmp: Path, digest: str) -> tuple[str, bool]:
        """Move a fully written, synced file to its name (unless that content is stored already)."""
        final = self.path_of(digest)
        if final.exists():
            return digest, False
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        os.chmod(final, 0o444)
        return digest, True

    def delete(self, sha256: str) -> None:
        path = self.path_of(sha256)
        if path.exists():
            path.chmod(0o644)
            path.unlink()

    def verified_path(self, sha256: str) -> Path:
        """The artifact's path after checking that its bytes still hash to `sha256`."""
        path = self.path_of(sha256)
        if not path.exists():
            raise IntegrityError(sha256, "<missing>", str(path))
        actual = sha256_file(path)
        if actual != sha256:
            raise IntegrityError(sha256, actual, str(path))
        return path

    def read_bytes(self, sha256: str) -> bytes:
        path = self.verified_path(sha256)
        data = path.read_bytes()
        # Re-check what was read: the file could change between the hash and the read.
        if hashlib.sha256(data).hexdigest() != sha256:
            raise IntegrityError(sha256, hashlib.sha256(data).hexdigest(), str(path))
        return data

    def unpack(self, sha256: str) -> Path:
        """A packed directory artifact, verified, then extracted into a fresh directory under `tmp/`.

        Extracting on every load (these artifacts are small: code, an MLmodel and its files) means a loaded model
        always runs from bytes that were just verified. The caller removes the directory when done with it.
        """
        data = self.read_bytes(sha256)
        workdir = self.scratch(f"unpacked-{sha256[:12]}-")
        try:
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                tar.extractall(workdir, filter="data")
        except (tarfile.TarError, OSError) as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            raise IntegrityError(sha256, f"<unreadable tar: {exc}>", str(self.path_of(sha256))) from None
        return workdir
