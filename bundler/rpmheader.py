"""The file list and the signature of an .rpm, read from its headers in pure Python.

The bundle's filelists.xml needs every file of every bundled package; upstream has it in
filelists.xml, which for EL8 AppStream is tens of MB. The downloaded packages carry the
same list in their headers, so it is read from there (what createrepo_c does too).
"""

from __future__ import annotations

import struct
from pathlib import Path

from kubeferry.errors import OperationError

_LEAD_SIZE = 96
_HEADER_MAGIC = b"\x8e\xad\xe8\x01"
_INT16, _INT32, _STRING_ARRAY = 3, 4, 8

TAG_FILEMODES = 1030
TAG_OLDFILENAMES = 1027
TAG_FILEFLAGS = 1037
TAG_DIRINDEXES = 1116
TAG_BASENAMES = 1117
TAG_DIRNAMES = 1118
RPMFILE_GHOST = 1 << 6
# Signature header tags holding an OpenPGP signature: RSA and DSA over the header (rpm >= 4.x
# writes these), PGP and GPG over header and payload (older rpmsign, EL7-era packages).
SIGNATURE_TAGS = (268, 267, 1002, 1005)
_S_IFMT, _S_IFDIR = 0o170000, 0o040000


def _read_header(data: bytes, offset: int, where: str) -> tuple[dict[int, tuple], int]:
    """The index entries of the header at ``offset`` and the offset just past it."""
    if data[offset:offset + 4] != _HEADER_MAGIC:
        raise OperationError(f"{where}: not an rpm file (bad header magic)")
    count, store_size = struct.unpack(">II", data[offset + 8:offset + 16])
    index_start = offset + 16
    store_start = index_start + 16 * count
    tags: dict[int, tuple] = {}
    for i in range(count):
        tag, kind, off, n = struct.unpack(">iiii", data[index_start + 16 * i:index_start + 16 * i + 16])
        tags[tag] = (kind, store_start + off, n)
    return tags, store_start + store_size


def _strings(data: bytes, start: int, n: int) -> list[str]:
    out = []
    for _ in range(n):
        end = data.index(b"\x00", start)
        out.append(data[start:end].decode("utf-8", errors="surrogateescape"))
        start = end + 1
    return out


def _ints(data: bytes, kind: int, start: int, n: int) -> list[int]:
    if kind == _INT32:
        return list(struct.unpack(f">{n}i", data[start:start + 4 * n]))
    if kind == _INT16:
        return [v & 0xFFFF for v in struct.unpack(f">{n}h", data[start:start + 2 * n])]
    raise OperationError(f"unexpected rpm tag type {kind}")


def rpm_files(path: Path) -> list[tuple[str, str]]:
    """Every file of the package as (path, type) with type "", "dir" or "ghost"."""
    where = f"package {path.name}"
    with open(path, "rb") as handle:
        data = handle.read(_LEAD_SIZE)
        if data[:4] != b"\xed\xab\xee\xdb":
            raise OperationError(f"{where}: not an rpm file (bad lead)")
        # Both headers sit before the payload; read generously, then exactly if needed.
        data += handle.read(4 << 20)
        _, end = _read_header(data, _LEAD_SIZE, where)
        main = end + (-end % 8)  # the signature header is padded to 8 bytes
        if len(data) < main + 16:
            data += handle.read()
        count, store = struct.unpack(">II", data[main + 8:main + 16])
        needed = main + 16 + 16 * count + store
        if len(data) < needed:
            data += handle.read(needed - len(data))
    tags, _ = _read_header(data, main, where)
    if TAG_BASENAMES in tags:
        kind, start, n = tags[TAG_BASENAMES]
        basenames = _strings(data, start, n)
        dirnames = _strings(data, tags[TAG_DIRNAMES][1], tags[TAG_DIRNAMES][2])
        indexes = _ints(data, *tags[TAG_DIRINDEXES])
        names = [dirnames[i] + base for i, base in zip(indexes, basenames)]
    elif TAG_OLDFILENAMES in tags:
        names = _strings(data, tags[TAG_OLDFILENAMES][1], tags[TAG_OLDFILENAMES][2])
    else:
        return []
    modes = _ints(data, *tags[TAG_FILEMODES]) if TAG_FILEMODES in tags else [0] * len(names)
    flags = _ints(data, *tags[TAG_FILEFLAGS]) if TAG_FILEFLAGS in tags else [0] * len(names)
    files = []
    for name, mode, flag in zip(names, modes, flags):
        if flag & RPMFILE_GHOST:
            files.append((name, "ghost"))
        elif mode & _S_IFMT == _S_IFDIR:
            files.append((name, "dir"))
        else:
            files.append((name, ""))
    return files


def rpm_signatures(path: Path) -> list[bytes]:
    """The OpenPGP signature packets in the package's signature header (none: unsigned)."""
    where = f"package {path.name}"
    with open(path, "rb") as handle:
        data = handle.read(_LEAD_SIZE + (1 << 20))
    if data[:4] != b"\xed\xab\xee\xdb":
        raise OperationError(f"{where}: not an rpm file (bad lead)")
    tags, _ = _read_header(data, _LEAD_SIZE, where)
    found = []
    for tag in SIGNATURE_TAGS:
        if tag in tags:
            _kind, start, n = tags[tag]
            found.append(data[start:start + n])
    return found
