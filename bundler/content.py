"""What each part of a build (images, packages, kernel, files) hands to the bundle writer."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Callable


@dataclass(frozen=True)
class Member:
    """One regular file of the bundle: its path inside the bundle and where its bytes are."""

    path: str  # relative POSIX path inside the bundle, e.g. "packages/el7/repodata/repomd.xml"
    source: Path  # the file on disk (usually in the cache) holding its bytes
    size: int
    sha256: str  # hex digest of the bytes
    # a reader of the bytes while a download still under way writes them, else None: read ``source``
    follow: Callable[[], IO[bytes]] | None = field(default=None, compare=False)

    @classmethod
    def from_file(cls, path: str, source: Path, sha256: str | None = None) -> Member:
        """A member for ``source``; hashes the file unless the caller already knows its sha256."""
        return cls(path=path, source=source, size=source.stat().st_size,
                   sha256=sha256 or sha256_file(source))


@dataclass
class Content:
    """One part of a build: its members and its section of the bundle metadata."""

    kind: str  # "images", "packages", "kernel", "files"
    members: list[Member] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def build_time() -> datetime:
    """When this build happened, as every part of a bundle records it: ``$SOURCE_DATE_EPOCH``
    when set (reproducible builds: the same sources give the same bytes), else now."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch.isdigit():
        return datetime.fromtimestamp(int(epoch), tz=timezone.utc)
    return datetime.now(timezone.utc).replace(microsecond=0)
