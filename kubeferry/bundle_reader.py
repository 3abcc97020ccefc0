"""Read a bundle without extracting it: metadata, verified member streams, images out.

Every read checks what it reads: member paths (nothing may escape the extraction root,
no links, no duplicates, nothing unlisted), sizes, sha256 of every byte, and truncation.
A bundle that fails any check is refused with one line naming the member.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from kubeferry.bundle_format import (
    CONTAINERD_NAME,
    FORMAT,
    FORMAT_VERSION,
    IMAGES_PREFIX,
    METADATA_NAME,
    SELF_CHECK,
    bundle_digest,
    encode_metadata,
    members_digest,
    metadata_self_check,
    unsafe_path_reason,
)
from kubeferry.errors import InputError, OperationError
from kubeferry.versions import parse_release

CHUNK = 1 << 20
IMAGES_INDEX = IMAGES_PREFIX + "index.json"
MAX_METADATA_BYTES = 64 << 20


class NotABundle(InputError):
    """The file is unreadable or is not a kubeferry bundle (exit 2)."""


class CorruptBundle(OperationError):
    """The bundle is damaged or was tampered with (exit 1)."""


@dataclass(frozen=True)
class VerifyResult:
    members: int
    bytes: int
    digest: str


class Bundle:
    """An open bundle file. Cheap to open: only the metadata is read until you stream."""

    def __init__(self, path: Path, metadata: dict[str, Any], raw: bytes | None = None) -> None:
        self.path = path
        self.metadata = metadata
        self.raw_metadata = raw if raw is not None else encode_metadata(metadata)  # as written
        self.members: list[dict[str, Any]] = metadata["members"]
        self._by_path = {member["path"]: member for member in self.members}
        self._offsets: dict[str, int] | None = None

    # -- opening -------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path) -> Bundle:
        """Read and check the metadata of the bundle at ``path``."""
        path = Path(path)
        try:
            with open(_regular_file(path), "rb") as handle, _tar_stream(handle, path) as tar:
                info = _next_member(tar, path)
                if info is None or info.name != METADATA_NAME:
                    raise NotABundle(f"{path}: not a kubeferry bundle (no {METADATA_NAME} first)")
                metadata, raw = _read_metadata(tar, info, path)
        except OSError as error:
            raise NotABundle(f"{path}: cannot read it ({error.strerror or error})") from None
        return cls(path, metadata, raw)

    # -- what it holds ---------------------------------------------------------------

    @property
    def digest(self) -> str:
        """The aggregate of the member list (``membersDigest``): names the content."""
        return self.metadata["membersDigest"]

    @property
    def bundle_digest(self) -> str:
        """sha256 of the metadata member's bytes: covers the metadata and every member."""
        return bundle_digest(self.raw_metadata)

    @property
    def self_checked(self) -> bool:
        """False for bundles built before the metadata carried its own check."""
        return SELF_CHECK in self.metadata

    @property
    def kubernetes(self) -> str:
        return self.metadata["kubernetes"]

    @property
    def os(self) -> str:
        return self.metadata["os"]

    @property
    def arch(self) -> str:
        return self.metadata["arch"]

    @property
    def images(self) -> list[dict[str, Any]]:
        return self.metadata.get("images", [])

    def member(self, path: str) -> dict[str, Any] | None:
        return self._by_path.get(path)

    # -- random access -------------------------------------------------------------------

    def offsets(self) -> dict[str, int]:
        """Where each member's bytes start in the file: read headers only, seeking past data.

        Checks paths, types, sizes and listing as ``stream`` does, but not the bytes: a
        reader at an offset must verify what it reads (the node checks sha256 on arrival).
        """
        if self._offsets is None:
            seen: set[str] = set()
            offsets: dict[str, int] = {}
            try:
                with tarfile.open(self.path, mode="r:") as tar:
                    for info in tar:
                        if info.name == METADATA_NAME and not offsets and not seen:
                            seen.add(info.name)
                            continue
                        self._check_header(info, seen)
                        offsets[info.name] = info.offset_data
            except tarfile.TarError as error:
                raise CorruptBundle(f"{self.path}: damaged or truncated tar ({error})") from None
            except OSError as error:
                raise NotABundle(f"{self.path}: cannot read it ({error.strerror or error})") from None
            missing = [m["path"] for m in self.members if m["path"] not in offsets]
            if missing:
                raise CorruptBundle(_why_missing(self.path, missing[0], _end_offset(self.path)))
            self._offsets = offsets
        return self._offsets

    def open_member(self, path: str, start: int = 0) -> IO[bytes]:
        """A file positioned at byte ``start`` of member ``path`` (read at most its size)."""
        handle = open(self.path, "rb")  # noqa: SIM115 - the caller closes it
        handle.seek(self.offsets()[path] + start)
        return handle

    # -- streaming ---------------------------------------------------------------------

    def stream(
        self, want: Callable[[str], bool] = lambda path: False
    ) -> Iterator[tuple[dict[str, Any], Iterator[bytes]]]:
        """Walk the whole bundle once, verifying every member; yield the wanted ones.

        For each wanted member this yields ``(entry, chunks)``. The chunks are handed out
        as they are read; the member's sha256 is checked when it ends, so a consumer must
        treat its output as provisional until the walk finishes without CorruptBundle.
        """
        try:
            with open(self.path, "rb") as handle, _tar_stream(handle, self.path) as tar:
                _next_member(tar, self.path)  # the metadata, checked by open()
                yield from self._walk(tar, want, seekable=True)
        except OSError as error:
            raise NotABundle(f"{self.path}: cannot read it ({error.strerror or error})") from None

    def _walk(self, tar: tarfile.TarFile, want: Callable[[str], bool],
              seekable: bool) -> Iterator[tuple[dict[str, Any], Iterator[bytes]]]:
        """The members after the metadata, each checked (path, type, order, size, sha256)."""
        seen: set[str] = set()
        expected = iter(self.members)
        stopped_at = -1
        while True:
            info = _next_member(tar, self.path)
            if info is None:
                stopped_at = tar.offset if seekable else -1
                break
            entry = self._check_header(info, seen)
            listed = next(expected, None)
            if listed is None or listed["path"] != info.name:
                raise CorruptBundle(
                    f"{self.path}: member {info.name} is out of order"
                    " (members must follow the metadata's list)"
                )
            chunks = _verified_chunks(tar, info, entry, self.path)
            if want(info.name):
                yield entry, chunks
            for _ in chunks:  # drain what the consumer did not read
                pass
        missing = next(expected, None)
        if missing is not None:
            raise CorruptBundle(_why_missing(self.path, missing["path"], stopped_at))

    def _check_header(self, info: tarfile.TarInfo, seen: set[str]) -> dict[str, Any]:
        name = info.name
        reason = unsafe_path_reason(name)
        if reason:
            raise CorruptBundle(f"{self.path}: refusing member {name!r}: it {reason}")
        if not info.isreg():
            kind = "a link" if info.issym() or info.islnk() else "not a regular file"
            raise CorruptBundle(f"{self.path}: refusing member {name}: it is {kind}")
        if name in seen:
            raise CorruptBundle(f"{self.path}: refusing member {name}: it appears twice")
        seen.add(name)
        entry = self._by_path.get(name)
        if entry is None:
            raise CorruptBundle(f"{self.path}: refusing member {name}: it is not in the metadata")
        if info.size != entry["size"]:
            raise CorruptBundle(
                f"{self.path}: member {name} has {info.size} bytes, the metadata says {entry['size']}"
            )
        return entry

    @classmethod
    def verify_stream(cls, handle: IO[bytes], name: str = "-") -> tuple[Bundle, VerifyResult]:
        """Verify a bundle read once, front to back, from a pipe or device
        (``cat BUNDLE | kubeferry bundle verify -``): the metadata, then every member."""
        path = Path(name)
        try:
            with _tar_stream(handle, path) as tar:
                info = _next_member(tar, path)
                if info is None or info.name != METADATA_NAME:
                    raise NotABundle(f"{path}: not a kubeferry bundle (no {METADATA_NAME} first)")
                metadata, raw = _read_metadata(tar, info, path)
                bundle = cls(path, metadata, raw)
                return bundle, bundle._verify_walk(bundle._walk(tar, lambda p: True, seekable=False))
        except OSError as error:
            raise NotABundle(f"{path}: cannot read it ({error.strerror or error})") from None

    def verify(self) -> VerifyResult:
        """Read every byte; CorruptBundle naming the first bad member, else a summary."""
        return self._verify_walk(self.stream(want=lambda path: True))

    def _verify_walk(self, walk: Iterator[tuple[dict[str, Any], Iterator[bytes]]]) -> VerifyResult:
        total = 0
        index: bytes | None = None
        for entry, chunks in walk:
            data = b"".join(chunks) if entry["path"] == IMAGES_INDEX else None
            for _ in chunks:
                pass
            index = data if data is not None else index
            total += entry["size"]
        self._check_images_index(index)
        return VerifyResult(members=len(self.members), bytes=total, digest=self.digest)

    def verify_image_list(self) -> None:
        """Check the metadata's image names and digests against ``images/index.json`` (whose
        sha256 the member list pins), read at its offset."""
        self._check_images_index(self.read_member(IMAGES_INDEX))

    def _check_images_index(self, index: bytes | None) -> None:
        """The metadata's image list must say what images/index.json says."""
        if index is None:
            if self.images:
                raise CorruptBundle(f"{self.path}: lists images but has no {IMAGES_INDEX}")
            return
        from_index = sorted(
            (m.get("annotations", {}).get(CONTAINERD_NAME, ""), m["digest"])
            for m in json.loads(index)["manifests"]
        )
        from_metadata = sorted((image["name"], image["digest"]) for image in self.images)
        if from_index != from_metadata:
            raise CorruptBundle(
                f"{self.path}: the image list in the metadata does not match {IMAGES_INDEX}"
            )

    def read_member(self, path: str) -> bytes | None:
        """The bytes of one small member, read at its offset and checked against its sha256;
        None if the member is not listed."""
        entry = self._by_path.get(path)
        if entry is None:
            return None
        with self.open_member(path) as handle:
            data = handle.read(entry["size"])
        if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise CorruptBundle(f"{self.path}: member {path} does not match its sha256"
                                " (corrupt or tampered)")
        return data

    # -- images out ---------------------------------------------------------------------

    def write_images_layout(self, out: IO[bytes]) -> int:
        """Write the images as an OCI image-layout tar (what ``ctr images import`` reads).

        Streams members from the bundle, verified as they pass; returns the image count.
        """
        if self.member(IMAGES_INDEX) is None:
            raise InputError(f"{self.path}: this bundle holds no images")
        self.verify_image_list()  # the names the count and ctr go by must be the index's
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as layout:
            for entry, chunks in self.stream(want=lambda p: p.startswith(IMAGES_PREFIX)):
                info = tarfile.TarInfo(entry["path"][len(IMAGES_PREFIX):])
                info.size = entry["size"]
                info.mode = 0o644
                info.mtime = 0
                layout.addfile(info, _ChunkReader(chunks))
        return len(self.images)


class _ChunkReader:
    """A minimal file object over an iterator of byte chunks (for tarfile.addfile)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def _regular_file(path: Path) -> Path:
    """``path`` if it is a regular file: readers seek (metadata, then members at offsets)."""
    if str(path) == "-":
        raise NotABundle("-: this command seeks in the bundle, so it needs a regular file, not"
                         " stdin ('bundle verify -' reads a stream); save the stream to a file first")
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return path  # open() names the cause
    if stat.S_ISDIR(mode):
        raise NotABundle(f"{path}: is a directory, not a bundle file")
    if not stat.S_ISREG(mode):
        raise NotABundle(f"{path}: this command seeks in the bundle, so it needs a regular file,"
                         " not a pipe or device ('bundle verify' reads a stream); save it to a file first")
    return path


def _end_offset(path: Path) -> int:
    """Where the tar reader stopped: the header after the last member it read."""
    try:
        with tarfile.open(path, mode="r:") as tar:
            for _ in tar:
                pass
            return tar.offset
    except (tarfile.TarError, OSError):
        return -1


def _why_missing(path: Path, member: str, offset: int) -> str:
    """One line for a listed member the tar reader did not reach: damaged or truncated.

    Python's tar reader ends the archive quietly at an invalid header, so the block where
    it stopped tells a damaged header (non-zero bytes) from a cut file (none, or zeros).
    """
    block = b""
    if offset >= 0:
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                block = handle.read(tarfile.BLOCKSIZE)
        except OSError:
            block = b""
    if len(block) == tarfile.BLOCKSIZE and block.strip(b"\0"):
        return (f"{path}: damaged: the tar header at byte {offset}, where member {member}"
                " should start, is invalid (corrupt or tampered)")
    return f"{path}: truncated: member {member} is missing"


def _tar_stream(handle: IO[bytes], path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=handle, mode="r|")
    except tarfile.TarError:
        raise NotABundle(f"{path}: not a kubeferry bundle (not a tar file)") from None


def _next_member(tar: tarfile.TarFile, path: Path) -> tarfile.TarInfo | None:
    try:
        return tar.next()
    except tarfile.TarError as error:
        raise CorruptBundle(f"{path}: damaged or truncated tar ({error})") from None


def _read_metadata(tar: tarfile.TarFile, info: tarfile.TarInfo,
                   path: Path) -> tuple[dict[str, Any], bytes]:
    if not info.isreg() or info.size > MAX_METADATA_BYTES:
        raise NotABundle(f"{path}: {METADATA_NAME} is not a plausible metadata file")
    handle = tar.extractfile(info)
    try:
        raw = handle.read() if handle else b""
        metadata = json.loads(raw)
    except (tarfile.TarError, OSError, ValueError):
        raise CorruptBundle(f"{path}: {METADATA_NAME} is damaged") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise NotABundle(f"{path}: not a kubeferry bundle ({METADATA_NAME} has no format)")
    version = metadata.get("formatVersion")
    if not isinstance(version, int) or isinstance(version, bool):
        raise NotABundle(f"{path}: {METADATA_NAME} has formatVersion {version!r}, not a number"
                         " (damaged, or not written by kubeferry)")
    if version != FORMAT_VERSION:
        raise NotABundle(
            f"{path}: bundle format {version} is not readable by this"
            f" kubeferry (reads {FORMAT_VERSION}); use a matching kubeferry"
        )
    recorded = metadata.get(SELF_CHECK)
    if recorded is not None and recorded != metadata_self_check(metadata):
        raise CorruptBundle(f"{path}: {METADATA_NAME} was changed after the build (its {SELF_CHECK}"
                            " does not match; tampered or damaged)")
    members = metadata.get("members")
    if not isinstance(members, list) or not all(_plausible_member(m) for m in members):
        raise CorruptBundle(f"{path}: {METADATA_NAME} has no valid member list")
    if members_digest(members) != metadata.get("membersDigest"):
        raise CorruptBundle(f"{path}: the member list does not match its digest (tampered?)")
    _check_fields(metadata, path)
    return metadata, raw


def _check_fields(metadata: dict[str, Any], path: Path) -> None:
    """The fields readers use must have their types, so no reader trips over them later."""
    for key in ("os", "arch"):
        if not isinstance(metadata.get(key), str) or not metadata[key]:
            raise CorruptBundle(f"{path}: {METADATA_NAME} has no valid {key!r}")
    try:
        metadata["kubernetes"] = parse_release(metadata.get("kubernetes"), f"{METADATA_NAME} kubernetes")
    except InputError as error:
        raise CorruptBundle(f"{path}: {error}") from None
    images = metadata.get("images", [])
    if not isinstance(images, list) or not all(
        isinstance(i, dict) and isinstance(i.get("name"), str) and isinstance(i.get("digest"), str)
        and _count(i.get("size", 0)) for i in images
    ):
        raise CorruptBundle(f"{path}: {METADATA_NAME} has no valid image list")
    include = metadata.get("include", [])
    if not isinstance(include, list) or not all(isinstance(name, str) for name in include):
        raise CorruptBundle(f"{path}: {METADATA_NAME} has no valid 'include' list")
    for section in ("kubeferry", "packages", "kernel", "files", "sources", "imageSet"):
        if metadata.get(section) is not None and not isinstance(metadata[section], dict):
            raise CorruptBundle(f"{path}: {METADATA_NAME} has an invalid {section!r} section")


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _plausible_member(member: object) -> bool:
    """A member entry: a string path, a byte count, a sha256 in hex."""
    return (isinstance(member, dict) and isinstance(member.get("path"), str)
            and _count(member.get("size")) and isinstance(member.get("sha256"), str)
            and len(member["sha256"]) == 64 and all(c in "0123456789abcdef" for c in member["sha256"]))


def _verified_chunks(
    tar: tarfile.TarFile, info: tarfile.TarInfo, entry: dict[str, Any], path: Path
) -> Iterator[bytes]:
    """The member's bytes in chunks; CorruptBundle at the end if they do not match."""
    digest = hashlib.sha256()
    remaining = info.size
    handle = tar.extractfile(info)
    assert handle is not None
    try:
        while remaining > 0:
            chunk = handle.read(min(CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            digest.update(chunk)
            yield chunk
    except (tarfile.TarError, OSError) as error:
        raise CorruptBundle(f"{path}: truncated in member {info.name} ({error})") from None
    if remaining:
        raise CorruptBundle(f"{path}: truncated in member {info.name}")
    if digest.hexdigest() != entry["sha256"]:
        raise CorruptBundle(f"{path}: member {info.name} does not match its sha256 (corrupt or tampered)")
