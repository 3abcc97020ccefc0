"""The bundle file's tar, as every writer lays it out: the metadata member first, then
each member in list order, every header alike (pax format, owner 0:0, mode 0644, one
mtime). The build writes a bundle through it, ``bundle patch`` rebuilds one byte for byte
through it, and a delta is a tar of the same shape.
"""

from __future__ import annotations

import hashlib
import io
import queue
import tarfile
import threading
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterable

from kubeferry.bundle.format import METADATA_NAME
from kubeferry.errors import OperationError

CHUNK = 1 << 20
HASH_QUEUE = 8  # chunks the file hash may lag behind the writer


@dataclass(frozen=True)
class Source:
    """One member to write: its listed path, size and sha256, and where its bytes come from."""

    path: str
    size: int
    sha256: str  # hex
    open: Callable[[], IO[bytes]]  # a reader at the member's first byte (read at most size)
    describe: str  # names the source in an error: "cache file X for images/..."
    remedy: str  # what to do when it does not match: "delete it and build again"


def write_tar(handle: IO[bytes], raw_metadata: bytes, sources: Iterable[Source], mtime: int,
              progress: Callable[[int], None] | None = None,
              first: tuple[str, bytes] | None = None) -> None:
    """Write a bundle-shaped tar to ``handle``: ``first`` (a name and bytes, for a delta's
    header), the metadata member, then every source, each hashed again on the way and
    refused (OperationError naming it) unless it is the bytes the listing says."""
    with tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT, copybufsize=CHUNK) as tar:
        for name, data in ([first] if first else []) + [(METADATA_NAME, raw_metadata)]:
            tar.addfile(header(name, len(data), mtime), io.BytesIO(data))
        for source in sources:
            _add(tar, source, mtime, progress)


def header(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    """The tar header of every member: only name, size and the build's mtime vary."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = mtime
    return info


class HashingWriter:
    """A file being written, hashing what passes: the whole file's sha256 at no extra read.

    The hash runs in a thread of its own (hashlib lets go of the GIL on large buffers), so
    it overlaps the member's own hash and the copy instead of adding a third pass in line:
    use it as a context manager; the digest is complete when the block ends.
    """

    def __init__(self, handle: IO[bytes], digest: Any) -> None:
        self._handle = handle
        self._digest = digest
        self._pending: queue.Queue[bytes | None] = queue.Queue(maxsize=HASH_QUEUE)
        self._thread = threading.Thread(target=self._hash, name="file-sha256", daemon=True)

    def __enter__(self) -> HashingWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._pending.put(None)
        self._thread.join()

    def _hash(self) -> None:
        while (data := self._pending.get()) is not None:
            self._digest.update(data)

    def write(self, data: bytes) -> int:
        self._pending.put(bytes(data))  # a caller may reuse its buffer; bytes are immutable
        return self._handle.write(data)

    def tell(self) -> int:
        return self._handle.tell()


class _HashingReader:
    """Reads a source, hashing what passes, reporting progress."""

    def __init__(self, handle: IO[bytes], progress: Callable[[int], None] | None) -> None:
        self._handle = handle
        self._progress = progress
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.sha256.update(data)
        if self._progress and data:
            self._progress(len(data))
        return data


def _add(tar: tarfile.TarFile, source: Source, mtime: int,
         progress: Callable[[int], None] | None) -> None:
    with source.open() as handle:
        reader = _HashingReader(handle, progress)
        try:
            tar.addfile(header(source.path, source.size, mtime), reader)
        except OSError as error:
            if "unexpected end of data" not in str(error):
                raise
            raise OperationError(f"{source.describe} ended before its {source.size} bytes;"
                                 f" {source.remedy}") from None
    if reader.sha256.hexdigest() != source.sha256:
        raise OperationError(f"{source.describe} does not match its sha256; {source.remedy}")
