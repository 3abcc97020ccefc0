"""Delta bundles: the next bundle carried as only what an old one lacks, patched back inside
the air gap into the full bundle, byte for byte.

A delta is one uncompressed tar of the bundle's shape (``archive.write_tar``):

1. ``kubeferry-delta.json``, the header: the base (bundle digest and file name of the old
   bundle it applies to), the target (bundle digest, file name, size and the sha256 of the
   whole file) and the build's tar mtime;
2. ``kubeferry-bundle.json``, the new bundle's metadata, byte for byte (so its sha256 is the
   target's bundle digest);
3. every member of the new bundle whose sha256 no member of the base has, in bundle order.

``patch`` checks the old bundle is the base (its bundle digest), then writes the new bundle
through the same tar writer as the build: each member from the delta or, by sha256, from
the old bundle read in place, each verified on the way; the whole file's sha256 must then be
the target's. The base may be given to the build as the old bundle (or its first part) or as
``bundle inspect --json`` output: the internet side needs only the old metadata.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable

from kubeferry.bundle.archive import HashingWriter, Source, write_tar
from kubeferry.bundle.errors import CorruptBundle, NotABundle
from kubeferry.bundle.format import (
    BUNDLE_SUFFIX,
    METADATA_NAME,
    bundle_digest,
    bundle_filename,
    encode_metadata,
    unsafe_path_reason,
)
from kubeferry.bundle.metadata import MAX_METADATA_BYTES
from kubeferry.bundle.metadata import parse as parse_metadata
from kubeferry.bundle.reader import Bundle
from kubeferry.errors import InputError, OperationError
from kubeferry.outputs import output_file

HEADER_NAME = "kubeferry-delta.json"
DELTA_FORMAT = "kubeferry-delta"
DELTA_VERSION = 1
DELTA_SUFFIX = ".delta" + BUNDLE_SUFFIX


@dataclass(frozen=True)
class Base:
    """What a delta needs of the old bundle: its digest, its name and its members' sha256."""

    digest: str
    name: str
    sha256s: frozenset[str]


def base_of(path: Path) -> Base:
    """The base from an old bundle (or its first part) or from its ``bundle inspect --json``."""
    try:
        with open(path, "rb") as handle:
            starts_json = handle.read(1) == b"{"
    except OSError as error:
        raise InputError(f"--delta-from {path}: cannot read it ({error.strerror or error})") from None
    if not starts_json:
        old = Bundle.open(path)
        return Base(old.bundle_digest, old.path.name, frozenset(m["sha256"] for m in old.members))
    if path.stat().st_size > MAX_METADATA_BYTES:
        raise InputError(f"--delta-from {path}: too large for a bundle's metadata")
    metadata = parse_metadata(path.read_bytes(), path)  # the self-check refuses an edited one
    # 'inspect --json' prints the parsed metadata; encoded as the writer encodes it, it is
    # the metadata member's bytes again, so its sha256 is the old bundle's digest
    return Base(bundle_digest(encode_metadata(metadata)), _bundle_name(metadata),
                frozenset(m["sha256"] for m in metadata["members"]))


def delta_name(target: str, base: Base) -> str:
    """``kubeferry-k8s-1.25.1-el7-amd64.from-<base digest, 12 hex>.delta.tar``."""
    stem = target[: -len(BUNDLE_SUFFIX)] if target.endswith(BUNDLE_SUFFIX) else target
    return f"{stem}.from-{base.digest.split(':', 1)[1][:12]}{DELTA_SUFFIX}"


def write_delta(new: Bundle, file_sha256: str, base: Base, output: Path) -> tuple[Path, int]:
    """Write the delta of bundle ``new`` (whose file has sha256 ``file_sha256``) against
    ``base`` into folder ``output``; return its path and how many members it carries."""
    with new.source_open() as handle, tarfile.open(fileobj=handle, mode="r|") as tar:
        first = tar.next()
        mtime = int(first.mtime) if first is not None else 0  # every header has the build's
    carried = [m for m in new.members if m["sha256"] not in base.sha256s]
    header = {
        "format": DELTA_FORMAT, "formatVersion": DELTA_VERSION,
        "base": {"digest": base.digest, "name": base.name},
        "target": {"digest": new.bundle_digest, "name": new.path.name,
                   "size": new.source.size if new.source else 0, "sha256": file_sha256},
        "mtime": mtime, "carried": len(carried),
    }
    target = output / delta_name(new.path.name, base)
    raw = json.dumps(header, indent=1).encode() + b"\n"
    sources = [_bundle_source(new, m["path"], m["size"], m["sha256"], "build again") for m in carried]
    with output_file(target, "--output") as handle:
        write_tar(handle, new.raw_metadata, sources, mtime, first=(HEADER_NAME, raw))
    return target, len(carried)


@dataclass
class Delta:
    """An open delta: its header, the new metadata and where each carried member starts."""

    path: Path
    header: dict[str, Any]
    raw_metadata: bytes
    metadata: dict[str, Any]
    offsets: dict[str, tuple[int, int]]  # path -> (offset, size)

    @classmethod
    def open(cls, path: Path) -> Delta:
        try:
            with open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r:") as tar:
                infos = tar.getmembers()
                if len(infos) < 2 or infos[0].name != HEADER_NAME or infos[1].name != METADATA_NAME:
                    raise NotABundle(f"{path}: not a kubeferry delta (no {HEADER_NAME} first)")
                raws = [_small(tar, info, path) for info in infos[:2]]
                offsets = {}
                for info in infos[2:]:
                    reason = unsafe_path_reason(info.name)
                    if reason or not info.isreg() or info.name in offsets:
                        raise CorruptBundle(f"{path}: refusing member {info.name!r} of the delta")
                    offsets[info.name] = (info.offset_data, info.size)
        except tarfile.TarError as error:
            raise NotABundle(f"{path}: not a kubeferry delta ({error})") from None
        except OSError as error:
            raise NotABundle(f"{path}: cannot read it ({error.strerror or error})") from None
        try:
            header = json.loads(raws[0])
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("format") != DELTA_FORMAT:
            raise NotABundle(f"{path}: not a kubeferry delta ({HEADER_NAME} has no format)")
        if header.get("formatVersion") != DELTA_VERSION:
            raise NotABundle(f"{path}: delta format {header.get('formatVersion')!r} is not readable by"
                             f" this kubeferry (reads {DELTA_VERSION})")
        metadata = parse_metadata(raws[1], path)
        if bundle_digest(raws[1]) != header["target"]["digest"]:
            raise CorruptBundle(f"{path}: the delta's metadata is not its target's (bundle digest"
                                f" {bundle_digest(raws[1])}, the header says {header['target']['digest']})")
        return cls(path, header, raws[1], metadata, offsets)


def patch(old_path: Path, delta_path: Path, output: Path,
          progress: Callable[[int], None] | None = None) -> tuple[Path, str]:
    """Write the delta's target bundle into folder ``output`` from the old bundle and the
    delta; return its path and bundle digest. The old bundle must be the delta's base."""
    delta = Delta.open(delta_path)
    old = Bundle.open(old_path)
    base = delta.header["base"]
    if old.bundle_digest != base["digest"]:
        raise InputError(f"{old_path}: is bundle {old.bundle_digest}, but {delta_path.name} applies to"
                         f" {base['digest']} ({base['name']}); give that bundle as OLD")
    in_old = {m["sha256"]: m for m in old.members}
    sources = []
    for member in delta.metadata["members"]:
        path, size, sha256 = member["path"], member["size"], member["sha256"]
        if path in delta.offsets:
            offset, carried = delta.offsets[path]
            if carried != size:
                raise CorruptBundle(f"{delta_path}: member {path} has {carried} bytes, the metadata"
                                    f" says {size}")
            sources.append(Source(path, size, sha256, _at(delta_path, offset),
                                  f"{delta_path}: member {path}", "the delta is damaged: carry it again"))
        elif sha256 in in_old:
            sources.append(_bundle_source(old, in_old[sha256]["path"], size, sha256,
                                          "the old bundle is damaged: verify it", as_path=path))
        else:
            raise CorruptBundle(f"{delta_path}: lacks member {path}, and the old bundle has no member"
                                " with its sha256 (a damaged or incomplete delta)")
    target = delta.header["target"]
    if Path(target["name"]).name != target["name"] or not target["name"]:
        raise CorruptBundle(f"{delta_path}: names its target {target['name']!r}, not a file name")
    written = output / target["name"]
    digest = hashlib.sha256()
    with output_file(written, "--output") as handle:
        with HashingWriter(handle, digest) as hashing:
            write_tar(hashing, delta.raw_metadata, sources, int(delta.header["mtime"]), progress)
        if digest.hexdigest() != target["sha256"]:
            raise OperationError(f"{written}: the rebuilt bundle's sha256 is {digest.hexdigest()}, not"
                                 f" the target's {target['sha256']}; nothing was written")
    return written, target["digest"]


def _bundle_source(bundle: Bundle, member: str, size: int, sha256: str, remedy: str,
                   as_path: str | None = None) -> Source:
    return Source(as_path or member, size, sha256, lambda: bundle.open_member(member),
                  f"{bundle.path}: member {member}{bundle.where(member)}", remedy)


def _at(path: Path, offset: int) -> Callable[[], IO[bytes]]:
    def opened() -> IO[bytes]:
        handle = open(path, "rb")  # noqa: SIM115 - write_tar closes it
        handle.seek(offset)
        return handle
    return opened


def _small(tar: tarfile.TarFile, info: tarfile.TarInfo, path: Path) -> bytes:
    if not info.isreg() or info.size > MAX_METADATA_BYTES:
        raise NotABundle(f"{path}: {info.name} is not a plausible delta header or metadata")
    handle = tar.extractfile(info)
    return handle.read() if handle else b""


def _bundle_name(metadata: dict[str, Any]) -> str:
    return bundle_filename(metadata["kubernetes"], metadata["os"], metadata["arch"])
