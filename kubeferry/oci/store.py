"""The content-addressed blob store: the one cache every build reads and writes.

Blobs live at ``root/blobs/sha256/<hex>`` and are only ever published by an atomic rename
after their digest was checked, so anything under ``blobs/`` is complete and verified.
Downloads in progress live at ``root/partial/<hex>`` so an interrupted build resumes.
Writers of one digest serialise on ``root/locks/<hex>`` (flock: threads and processes).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator, Protocol

from kubeferry.errors import OperationError
from kubeferry.oci.descriptor import Descriptor
from kubeferry.oci.reference import DIGEST_RE
from kubeferry.outputs import os_error

__all__ = ["BlobSource", "BlobStore", "Descriptor", "digest_of", "hex_of"]

_CHUNK = 1 << 20


def digest_of(data: bytes) -> str:
    """The OCI digest (``sha256:<hex>``) of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hex_of(digest: str) -> str:
    """The hex part of a sha256 digest; refuses anything else, since it becomes a file name."""
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise OperationError(f"invalid digest {digest!r}: expected sha256:<64 lowercase hex>")
    return digest[len("sha256:") :]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobSource(Protocol):
    """What a push reads blobs from: the blob store, or a bundle read in place."""

    def size(self, digest: str) -> int: ...

    def open(self, digest: str) -> BinaryIO:
        """A reader of exactly the blob's bytes; it must fail rather than yield wrong ones."""
        ...


class BlobStore:
    """Verified blobs by digest, plus resumable partial downloads."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.blobs_dir = self.root / "blobs" / "sha256"
        self.partial_dir = self.root / "partial"
        self.locks_dir = self.root / "locks"
        for directory in (self.blobs_dir, self.partial_dir, self.locks_dir):
            directory.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.blobs_dir / hex_of(digest)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def open(self, digest: str) -> BinaryIO:
        """Open a stored blob for reading (it was verified when it was published)."""
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise OperationError(f"blob {digest} is not in the cache at {self.root}") from None

    def get_bytes(self, digest: str) -> bytes:
        """Read a (small) blob, checking its digest again: manifests and configs steer pulls."""
        with self.open(digest) as handle:
            data = handle.read()
        if digest_of(data) != digest:
            raise OperationError(
                f"cached blob {digest} at {self.path(digest)} is corrupt; delete it and retry"
            )
        return data

    def put_bytes(self, data: bytes, digest: str | None = None) -> str:
        """Store ``data``; when ``digest`` is given it must match. No-op if already present."""
        actual = digest_of(data)
        if digest is not None and actual != digest:
            raise OperationError(f"blob {digest} does not match its digest (got {actual})")
        target = self.path(actual)
        if target.is_file():
            return actual
        with self._new_blob() as (handle, temp):
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            os.replace(temp, target)
        _fsync_dir(self.blobs_dir)
        return actual

    def put_stream(self, stream: BinaryIO, digest: str | None = None) -> tuple[str, int]:
        """Store everything read from ``stream`` (hashing as it goes); returns (digest, size)."""
        hasher = hashlib.sha256()
        size = 0
        with self._new_blob() as (handle, temp):
            for chunk in iter(lambda: stream.read(_CHUNK), b""):
                hasher.update(chunk)
                handle.write(chunk)
                size += len(chunk)
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            actual = "sha256:" + hasher.hexdigest()
            if digest is not None and actual != digest:
                raise OperationError(f"blob {digest} does not match its digest (got {actual})")
            os.replace(temp, self.path(actual))
        _fsync_dir(self.blobs_dir)
        return actual, size

    @contextlib.contextmanager
    def _new_blob(self) -> Iterator[tuple[BinaryIO, str]]:
        """A temp file in ``blobs/``, removed unless the caller renamed it; a full or read-only
        cache is one line naming the file, never a bare OSError that a caller might retry."""
        temp = ""
        try:
            fd, temp = tempfile.mkstemp(dir=self.blobs_dir, prefix=".tmp-")
            with os.fdopen(fd, "wb") as handle:
                yield handle, temp
        except BaseException as error:
            if temp:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
            if isinstance(error, OSError):
                raise os_error(error, "cache file", temp or self.blobs_dir) from None
            raise

    def partial_path(self, digest: str) -> Path:
        return self.partial_dir / hex_of(digest)

    def commit_partial(self, digest: str, actual_digest: str | None = None) -> Path:
        """Publish a finished partial download under its digest.

        The whole file is hashed unless the caller already hashed it while streaming and
        passes ``actual_digest``. On a mismatch the partial file is deleted (it can never
        become right by resuming) and OperationError is raised.
        """
        partial = self.partial_path(digest)
        if actual_digest is None:
            hasher = hashlib.sha256()
            with open(partial, "rb") as handle:
                for chunk in iter(lambda: handle.read(_CHUNK), b""):
                    hasher.update(chunk)
            actual_digest = "sha256:" + hasher.hexdigest()
        if actual_digest != digest:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            raise OperationError(f"blob {digest} does not match its digest (got {actual_digest})")
        with open(partial, "rb+") as handle:
            os.fsync(handle.fileno())
        target = self.path(digest)
        os.replace(partial, target)
        _fsync_dir(self.blobs_dir)
        return target

    @contextlib.contextmanager
    def lock(self, digest: str) -> Iterator[None]:
        """Hold the per-digest writer lock (flock conflicts across threads and processes)."""
        lock_path = self.locks_dir / hex_of(digest)
        with open(lock_path, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def digests(self) -> Iterator[str]:
        """Every blob in the store."""
        for entry in sorted(self.blobs_dir.iterdir()):
            if not entry.name.startswith("."):
                yield "sha256:" + entry.name
