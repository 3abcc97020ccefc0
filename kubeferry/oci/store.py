"""The content-addressed store: the one cache every build reads and writes.

Image blobs, packages, files, wheels and the admin kit all live here, by sha256:

- ``root/blobs/sha256/<hex>``: complete, verified files, only ever published by an atomic
  rename after their digest was checked;
- ``root/partial/<key>``: downloads in progress, so an interrupted build resumes;
- ``root/locks/<key>``: one writer per key (flock: threads and processes alike);
- ``root/index/<algorithm>/<hex>``: the sha256 of a file known by another checksum (rpm-md
  may pin sha1 or sha512) or by another key (the admin kit by a digest of its inputs; the
  manifest an image tag named last, by the sha256 of the image's name).

The key of a sha256 digest is its hex, of any other ``algorithm:hex`` ``algorithm-hex``:
every writer of one digest, whatever downloads it, takes the same lock and resumes the same
partial file. Two builds sharing a cache therefore never write one file twice at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO, Iterator, Protocol

from kubeferry.errors import OperationError
from kubeferry.oci.descriptor import Descriptor
from kubeferry.oci.reference import DIGEST_RE
from kubeferry.outputs import os_error

__all__ = ["BlobSource", "BlobStore", "Descriptor", "digest_of", "hex_of", "key_of"]

_CHUNK = 1 << 20


def digest_of(data: bytes) -> str:
    """The OCI digest (``sha256:<hex>``) of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hex_of(digest: str) -> str:
    """The hex part of a sha256 digest; refuses anything else, since it becomes a file name."""
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise OperationError(f"invalid digest {digest!r}: expected sha256:<64 lowercase hex>")
    return digest[len("sha256:") :]


_CHECKSUM = re.compile(r"^([a-z0-9]+):([0-9a-f]{32,128})$")


def key_of(digest: str) -> str:
    """The file name of ``algorithm:hex`` under partial/ and locks/ (see the module doc)."""
    match = _CHECKSUM.match(digest) if isinstance(digest, str) else None
    if match is None or match.group(1) not in hashlib.algorithms_available:
        raise OperationError(f"invalid digest {digest!r}: expected <algorithm>:<lowercase hex>")
    algorithm, hexdigest = match.groups()
    return hex_of(digest) if algorithm == "sha256" else f"{algorithm}-{hexdigest}"


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
    """Verified files by digest, plus resumable partial downloads (see the module doc)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.blobs_dir = self.root / "blobs" / "sha256"
        self.partial_dir = self.root / "partial"
        self.locks_dir = self.root / "locks"
        self.index_dir = self.root / "index"
        for directory in (self.blobs_dir, self.partial_dir, self.locks_dir, self.index_dir):
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise os_error(error, "cache directory", directory) from None

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
        """Where a download of ``digest`` (``algorithm:hex``) in progress lives."""
        return self.partial_dir / key_of(digest)

    def find(self, digest: str) -> Path | None:
        """The stored file with this digest (``sha256:...``, or another algorithm's digest
        or index key the store was told about), if any."""
        algorithm, _, hexdigest = digest.partition(":")
        if algorithm == "sha256":
            path = self.path(digest)
            return path if path.is_file() else None
        pointer = self.index_dir / algorithm / hexdigest
        try:
            target = self.path("sha256:" + pointer.read_text().strip())
        except (OSError, OperationError):
            return None
        return target if target.is_file() else None

    def alias(self, digest: str, sha256: str) -> None:
        """Record that ``digest`` (another algorithm's, or an index key ``name:hex``) names
        the stored file ``sha256``."""
        algorithm, _, hexdigest = digest.partition(":")
        hex_of(sha256)
        if not algorithm.isalnum() or not hexdigest.isalnum():
            raise OperationError(f"invalid index key {digest!r}")
        directory = self.index_dir / algorithm
        temp = directory / f".{hexdigest}.{os.getpid()}.{threading.get_ident()}"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            temp.write_text(hex_of(sha256) + "\n")
            os.replace(temp, directory / hexdigest)
        except OSError as error:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise os_error(error, "cache file", temp) from None

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
        return self.adopt(partial, digest)

    def adopt(self, path: Path, sha256: str, alias: str | None = None) -> Path:
        """Move a finished file whose sha256 the caller checked into the store (same file
        system: partial/ or a staging file in it); ``alias`` also names it (see ``alias``)."""
        target = self.path(sha256)
        try:
            with open(path, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(path, target)
            _fsync_dir(self.blobs_dir)
        except OSError as error:
            raise os_error(error, "cache file", target) from None
        if alias is not None and not alias.startswith("sha256:"):
            self.alias(alias, sha256)
        return target

    @contextlib.contextmanager
    def lock(self, digest: str) -> Iterator[None]:
        """Hold the writer lock of ``digest`` (flock conflicts across threads and processes)."""
        lock_path = self.locks_dir / key_of(digest)
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
