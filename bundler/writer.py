"""Write a bundle file: metadata first, then every member, to a temp name renamed at the end."""

from __future__ import annotations

import hashlib
import io
import os
import queue
import tarfile
import threading
from pathlib import Path
from typing import Any, Callable

from kubeferry.bundle_format import (
    FORMAT,
    FORMAT_VERSION,
    METADATA_NAME,
    SELF_CHECK,
    encode_metadata,
    members_digest,
    metadata_self_check,
)
from kubeferry.bundler.content import Member
from kubeferry.errors import OperationError
from kubeferry.outputs import output_file

CHUNK = 1 << 20


def write_bundle(
    target: Path,
    metadata: dict[str, Any],
    members: list[Member],
    progress: Callable[[int], None] | None = None,
    mtime: int = 0,
    file_hash: Any = None,
) -> dict[str, Any]:
    """Write ``members`` and their metadata as the bundle ``target``; return the metadata.

    The bytes of each member are hashed again as they are copied, so a damaged cache
    file can never end up in a bundle under a good checksum. ``file_hash`` (a hashlib
    object) is fed every byte of the file as it is written: the sha256 an operator checks
    with ``sha256sum`` on the other side, at no extra read.
    """
    paths = [member.path for member in members]
    if len(set(paths)) != len(paths):
        raise OperationError("internal error: two bundle members share a path")
    listed = [{"path": m.path, "size": m.size, "sha256": m.sha256} for m in members]
    metadata = {
        "format": FORMAT,
        "formatVersion": FORMAT_VERSION,
        **metadata,
        "members": listed,
        "membersDigest": members_digest(listed),
    }
    metadata.pop(SELF_CHECK, None)
    metadata[SELF_CHECK] = metadata_self_check(metadata)
    with output_file(target, "bundle file") as handle:
        output = _HashingWriter(handle, file_hash) if file_hash is not None else handle
        try:
            with tarfile.open(fileobj=output, mode="w", format=tarfile.PAX_FORMAT,
                              copybufsize=CHUNK) as tar:
                raw = encode_metadata(metadata)
                tar.addfile(_info(METADATA_NAME, len(raw), mtime), io.BytesIO(raw))
                for member in members:
                    _add_member(tar, member, mtime, progress)
        finally:
            if isinstance(output, _HashingWriter):
                output.finish()
    return metadata


def _info(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = mtime
    return info


class _HashingWriter:
    """A file being written, hashing what passes on a thread of its own: each member's bytes
    are hashed twice (the member's sha256, the file's), and hashlib lets go of the GIL, so
    the second hash runs on another core while the next chunk is read and hashed."""

    def __init__(self, handle, digest) -> None:
        self._handle = handle
        self._digest = digest
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        self._thread = threading.Thread(target=self._hash, name="bundle-file-sha256", daemon=True)
        self._thread.start()

    def _hash(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            self._digest.update(chunk)

    def write(self, data: bytes) -> int:
        self._chunks.put(bytes(data))
        return self._handle.write(data)

    def tell(self) -> int:
        return self._handle.tell()

    def finish(self) -> None:
        """Wait until every byte written is hashed (before the digest is read)."""
        self._chunks.put(None)
        self._thread.join()


class _HashingReader:
    """Reads a file, hashing what passes, reporting progress."""

    def __init__(self, handle, progress: Callable[[int], None] | None) -> None:
        self._handle = handle
        self._progress = progress
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.sha256.update(data)
        if self._progress and data:
            self._progress(len(data))
        return data


def _add_member(tar: tarfile.TarFile, member: Member, mtime: int,
                progress: Callable[[int], None] | None) -> None:
    try:
        with open(member.source, "rb") as source:
            if os.fstat(source.fileno()).st_size != member.size:
                raise OperationError(
                    f"cache file {member.source} for {member.path} changed size;"
                    " delete it and build again"
                )
            reader = _HashingReader(source, progress)
            tar.addfile(_info(member.path, member.size, mtime), reader)
    except FileNotFoundError:
        raise OperationError(
            f"cache file {member.source} for {member.path} is gone; build again"
        ) from None
    if reader.sha256.hexdigest() != member.sha256:
        raise OperationError(
            f"cache file {member.source} for {member.path} does not match its sha256;"
            " delete it and build again"
        )
