"""Write a bundle file: metadata first, then every member, to a temp name renamed at the end."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any, Callable

from kubeferry.bundle.archive import HashingWriter, Source, write_tar
from kubeferry.bundle.format import encode_metadata
from kubeferry.bundle.metadata import MemberEntry, assemble
from kubeferry.bundler.content import Member
from kubeferry.errors import OperationError
from kubeferry.outputs import output_file


def write_bundle(
    target: Path,
    metadata: dict[str, Any],
    members: list[Member],
    progress: Callable[[int], None] | None = None,
    mtime: int = 0,
    file_hash: Any = None,
    settle: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Write ``members`` and their metadata as the bundle ``target``; return the metadata.

    The bytes of each member are hashed again as they are copied, so a damaged cache
    file can never end up in a bundle under a good checksum. ``file_hash`` (a hashlib
    object) is fed every byte of the file as it is written: the sha256 an operator checks
    with ``sha256sum`` on the other side, at no extra read. ``settle`` runs before the file
    takes its name: members read while their downloads ran are in it only once those ended well.
    """
    paths = [member.path for member in members]
    if len(set(paths)) != len(paths):
        raise OperationError("internal error: two bundle members share a path")
    listed = [MemberEntry(path=m.path, size=m.size, sha256=m.sha256) for m in members]
    metadata = assemble(metadata, listed)
    sources = [_cache_source(m) for m in members]
    with output_file(target, "bundle file") as handle:
        if file_hash is None:
            write_tar(handle, encode_metadata(metadata), sources, mtime, progress)
        else:
            with HashingWriter(handle, file_hash) as output:
                write_tar(output, encode_metadata(metadata), sources, mtime, progress)
        if settle is not None:
            settle()
    return metadata


def _cache_source(member: Member) -> Source:
    """``member`` read from its cache file, refused if the file is gone or changed size."""
    describe = f"cache file {member.source} for {member.path}"

    def opened() -> IO[bytes]:
        if member.follow is not None:
            return member.follow()  # bounded by the member's size; write_tar checks its sha256
        try:
            handle = open(member.source, "rb")  # noqa: SIM115 - write_tar closes it
        except FileNotFoundError:
            raise OperationError(f"{describe} is gone; build again") from None
        if os.fstat(handle.fileno()).st_size != member.size:
            handle.close()
            raise OperationError(f"{describe} changed size; delete it and build again")
        return handle

    return Source(member.path, member.size, member.sha256, opened, describe, "delete it and build again")
