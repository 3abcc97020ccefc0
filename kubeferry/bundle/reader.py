"""Read a bundle without extracting it: metadata, verified member streams, images out.

Every read checks what it reads: member paths (nothing may escape the extraction root,
no links, no duplicates, nothing unlisted), sizes, sha256 of every byte, and truncation.
A bundle that fails any check is refused with one line naming the member.
"""

from __future__ import annotations

import hashlib
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from kubeferry.bundle import layout
from kubeferry.bundle.errors import CorruptBundle, NotABundle
from kubeferry.bundle.format import (
    IMAGES_PREFIX,
    METADATA_NAME,
    SELF_CHECK,
    bundle_digest,
    encode_metadata,
    unsafe_path_reason,
)
from kubeferry.bundle.metadata import MAX_METADATA_BYTES, ImageEntry, MemberEntry, RecordedImages
from kubeferry.bundle.metadata import parse as parse_metadata
from kubeferry.bundle.parts import BundleSource
from kubeferry.errors import InputError

CHUNK = 1 << 20
MAX_SMALL_MEMBER = 4 << 20  # manifests, keys, calico.yaml: what a reader holds in memory


@dataclass(frozen=True)
class VerifyResult:
    members: int
    bytes: int
    digest: str


class Bundle:
    """An open bundle file. Cheap to open: only the metadata is read until you stream."""

    def __init__(self, path: Path, metadata: dict[str, Any], raw: bytes | None = None,
                 source: BundleSource | None = None) -> None:
        self.path = path
        self.source = source  # None: read once from a stream
        self.metadata = metadata
        self.raw_metadata = raw if raw is not None else encode_metadata(metadata)  # as written
        self.members: list[MemberEntry] = metadata["members"]
        self._by_path = {member["path"]: member for member in self.members}
        self._offsets: dict[str, int] | None = None

    # -- opening -------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path) -> Bundle:
        """Read and check the metadata of the bundle at ``path``."""
        path = Path(path)
        if str(path) == "-":
            raise NotABundle("-: this command seeks in the bundle, so it needs a regular file, not"
                             " stdin ('bundle verify -' reads a stream); save the stream to a file first")
        source = BundleSource.of(path)
        try:
            with source.open() as handle, _tar_stream(handle, path) as tar:
                info = _next_member(tar, path)
                if info is None or info.name != METADATA_NAME:
                    raise NotABundle(f"{path}: not a kubeferry bundle (no {METADATA_NAME} first)")
                metadata, raw = _read_metadata(tar, info, path)
        except OSError as error:
            raise NotABundle(f"{path}: cannot read it ({error.strerror or error})") from None
        return cls(path, metadata, raw, source)

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
    def images(self) -> list[ImageEntry]:
        return self.metadata.get("images", [])

    @property
    def image_set(self) -> RecordedImages:
        """The image set recorded at build time."""
        return RecordedImages.from_dict(self.metadata.get("imageSet"), self.kubernetes)

    def member(self, path: str) -> MemberEntry | None:
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
                with self._open() as handle, tarfile.open(fileobj=handle, mode="r:") as tar:
                    for info in tar:
                        if info.name == METADATA_NAME and not offsets and not seen:
                            seen.add(info.name)
                            continue
                        self._check_header(info, seen)
                        offsets[info.name] = info.offset_data
                    end = tar.offset
            except tarfile.TarError as error:
                raise CorruptBundle(f"{self.path}: damaged or truncated tar ({error})") from None
            except OSError as error:
                raise NotABundle(f"{self.path}: cannot read it ({error.strerror or error})") from None
            missing = [m["path"] for m in self.members if m["path"] not in offsets]
            if missing:
                raise CorruptBundle(self._why_missing(missing[0], end))
            self._refuse_parts_beyond(end)
            self._offsets = offsets
        return self._offsets

    def open_member(self, path: str, start: int = 0) -> IO[bytes]:
        """A file positioned at byte ``start`` of member ``path`` (read at most its size).

        Not verified: for bytes whose sha256 is checked where they land (a node). Readers
        that use the bytes here take ``open_verified`` or ``read_member``."""
        offset = self.offsets()[path] + start
        handle = self._open()
        handle.seek(offset)
        return handle

    def where(self, path: str) -> str:
        """`` (in part NAME.002)`` for a member of a split bundle: what an error names."""
        if self.source is None or self._offsets is None or path not in self._offsets:
            return ""
        start = self._offsets[path]
        return self.source.where(start, start + self._by_path[path]["size"])

    def source_open(self) -> IO[bytes]:
        """A reader of the whole bundle file (across its parts), from its first byte."""
        return self._open()

    def _open(self) -> IO[bytes]:
        if self.source is None:
            raise NotABundle(f"{self.path}: a stream is read once, front to back")
        return self.source.open()

    def _refuse_parts_beyond(self, end: int) -> None:
        """``end`` is where the tar's end marker starts: two zero blocks, then zeros to a
        whole record, which a last part may hold alone."""
        trailer = end + 2 * tarfile.BLOCKSIZE
        records = -(-trailer // tarfile.RECORDSIZE) * tarfile.RECORDSIZE
        extra = self.source.beyond(records) if self.source is not None and end >= 0 else ""
        if extra:
            raise CorruptBundle(extra)

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
            with self._open() as handle, _tar_stream(handle, self.path) as tar:
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
            end = info.offset_data + info.size
            where, ended = (self.source.where(info.offset_data, end), self.source.ended_early(end)) \
                if self.source else ("", "")
            chunks = _verified_chunks(tar, info, entry, self.path, where, ended)
            if want(info.name):
                yield entry, chunks
            for _ in chunks:  # drain what the consumer did not read
                pass
        missing = next(expected, None)
        if missing is not None:
            raise CorruptBundle(self._why_missing(missing["path"], stopped_at))
        self._refuse_parts_beyond(stopped_at)

    def _why_missing(self, member: str, offset: int) -> str:
        """One line for a listed member the tar reader did not reach: damaged or truncated
        (for a split bundle: which part is damaged, missing or cut).

        Python's tar reader ends the archive quietly at an invalid header, so the block where
        it stopped tells a damaged header (non-zero bytes) from a cut file (none, or zeros).
        """
        block = b""
        if offset >= 0:
            try:
                with self._open() as handle:
                    handle.seek(offset)
                    block = handle.read(tarfile.BLOCKSIZE)
            except OSError:
                block = b""
        if len(block) == tarfile.BLOCKSIZE and block.strip(b"\0"):
            where = self.source.where(offset, offset + tarfile.BLOCKSIZE) if self.source else ""
            return (f"{self.path}: damaged: the tar header at byte {offset}{where}, where member"
                    f" {member} should start, is invalid (corrupt, tampered or a part out of order)")
        ended = self.source.ended_early(offset) if self.source else ""
        return f"{self.path}: truncated: member {member} is missing{ended}"

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
            data = b"".join(chunks) if entry["path"] == layout.INDEX_MEMBER else None
            for _ in chunks:
                pass
            index = data if data is not None else index
            total += entry["size"]
        self._check_images_index(index)
        return VerifyResult(members=len(self.members), bytes=total, digest=self.digest)

    def verify_image_list(self) -> None:
        """Check the metadata's image names and digests against ``images/index.json`` (whose
        sha256 the member list pins), read at its offset."""
        present = self.member(layout.INDEX_MEMBER) is not None
        self._check_images_index(self.read_member(layout.INDEX_MEMBER) if present else None)

    def _check_images_index(self, index: bytes | None) -> None:
        """The metadata's image list must say what images/index.json says."""
        if index is None:
            if self.images:
                raise CorruptBundle(f"{self.path}: lists images but has no {layout.INDEX_MEMBER}")
            return
        from_metadata = sorted((image["name"], image["digest"]) for image in self.images)
        if layout.index_names(index) != from_metadata:
            raise CorruptBundle(
                f"{self.path}: the image list in the metadata does not match {layout.INDEX_MEMBER}"
            )

    # -- verified members ----------------------------------------------------------------

    def open_verified(self, path: str, what: str | None = None) -> VerifiedMember:
        """A reader of member ``path`` at its offset that raises CorruptBundle, naming
        ``what`` (default: the member), if its bytes do not match the listed sha256."""
        entry = self._by_path.get(path)
        if entry is None:
            raise InputError(f"{self.path}: has no member {path}")
        handle = self.open_member(path)
        return VerifiedMember(handle, entry, str(self.path), (what or f"member {path}") + self.where(path))

    def read_member(self, path: str, max_size: int = MAX_SMALL_MEMBER) -> bytes:
        """The verified bytes of the small member ``path`` (InputError if it is absent or
        larger than ``max_size``)."""
        entry = self._by_path.get(path)
        if entry is not None and entry["size"] > max_size:
            raise CorruptBundle(f"{self.path}: member {path} has {entry['size']} bytes, more than a"
                                f" member of its kind ever holds ({max_size}); corrupt or tampered")
        with self.open_verified(path) as reader:
            return reader.read()

    # -- images out ---------------------------------------------------------------------

    def write_images_layout(self, out: IO[bytes]) -> int:
        """Write the images as an OCI image-layout tar (what ``ctr images import`` reads).

        Streams members from the bundle, verified as they pass; returns the image count.
        """
        if self.member(layout.INDEX_MEMBER) is None:
            raise InputError(f"{self.path}: this bundle holds no images")
        self.verify_image_list()  # the names the count and ctr go by must be the index's
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as images:
            for entry, chunks in self.stream(want=lambda p: p.startswith(IMAGES_PREFIX)):
                info = tarfile.TarInfo(entry["path"][len(IMAGES_PREFIX):])
                info.size = entry["size"]
                info.mode = 0o644
                info.mtime = 0
                images.addfile(info, _ChunkReader(chunks))
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


class VerifiedMember:
    """Reads exactly one member's bytes and checks them against its sha256 at the end, so
    a consumer (an upload, a parser) never finishes on bytes the bundle does not vouch for."""

    def __init__(self, handle: IO[bytes], entry: MemberEntry, bundle: str, what: str) -> None:
        self._handle = handle
        self._size = self._remaining = entry["size"]
        self._expected = entry["sha256"]
        self._bundle = bundle
        self._what = what
        self._hasher = hashlib.sha256()

    def __len__(self) -> int:  # lets requests send a Content-Length instead of chunks
        return self._size

    def read(self, amount: int = -1) -> bytes:
        if self._remaining <= 0:
            return b""
        wanted = self._remaining if amount is None or amount < 0 else min(amount, self._remaining)
        data = self._handle.read(wanted)
        if not data:
            raise CorruptBundle(f"{self._bundle}: truncated in {self._what}")
        if amount is None or amount < 0:
            while len(data) < wanted and (more := self._handle.read(wanted - len(data))):
                data += more
            if len(data) < wanted:
                raise CorruptBundle(f"{self._bundle}: truncated in {self._what}")
        self._remaining -= len(data)
        self._hasher.update(data)
        if self._remaining == 0 and self._hasher.hexdigest() != self._expected:
            raise CorruptBundle(f"{self._bundle}: {self._what} does not match its sha256"
                                " (corrupt or tampered)")
        return data

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> VerifiedMember:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
    except (tarfile.TarError, OSError):
        raise CorruptBundle(f"{path}: {METADATA_NAME} is damaged") from None
    return parse_metadata(raw, path), raw


def _verified_chunks(
    tar: tarfile.TarFile, info: tarfile.TarInfo, entry: dict[str, Any], path: Path, where: str = "",
    ended: str = "",
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
        raise CorruptBundle(f"{path}: truncated in member {info.name}{ended} ({error})") from None
    if remaining:
        raise CorruptBundle(f"{path}: truncated in member {info.name}{ended}")
    if digest.hexdigest() != entry["sha256"]:
        cause = "a damaged part, or parts out of order" if where else "corrupt or tampered"
        raise CorruptBundle(f"{path}: member {info.name}{where} does not match its sha256 ({cause})")
