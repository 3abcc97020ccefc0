"""A bundle's bytes, in one file or split into parts for removable media, read as one.

``bundle split`` cuts the bundle file into ``NAME.001``, ``NAME.002``, ... of one size (the
last may be shorter): ``cat`` of the parts is the bundle byte for byte. Every reader opens a
bundle through ``BundleSource``: given the first part it finds the others beside it and
reads across them in place, never joining them. The parts record nothing of their own; a
missing, reordered or damaged part is found by what the metadata says (the members' order,
sizes and sha256, which must fall where the tar headers put them), and the reader names the
part a fault lies in (``where``).
"""

from __future__ import annotations

import io
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

from kubeferry.bundle.errors import CorruptBundle, NotABundle
from kubeferry.errors import InputError
from kubeferry.outputs import output_file

PART_DIGITS = 3
MAX_PARTS = 10**PART_DIGITS - 1
FIRST_PART = "1".zfill(PART_DIGITS)
PART_RE = re.compile(rf"^(?P<base>.+)\.(?P<number>\d{{{PART_DIGITS}}})$")
# FAT32 takes no file of 4 GiB or more; a round size just under it.
DEFAULT_PART_SIZE = (4 << 30) - (1 << 20)
CHUNK = 1 << 20
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"^(?P<number>\d+(\.\d+)?)\s*(?P<unit>[KMGT]?)(I?B)?$")


def part_name(base: str, number: int) -> str:
    """``NAME.001`` for part 1 of bundle file ``NAME``."""
    return f"{base}.{str(number).zfill(PART_DIGITS)}"


def base_name(path: Path) -> str:
    """The bundle file's name, for the bundle itself or for any of its parts."""
    match = PART_RE.match(path.name)
    return match.group("base") if match else path.name


def parse_size(value: str, what: str = "--size") -> int:
    """Bytes from ``3.9G``, ``700M``, ``4095MiB`` or a plain byte count (binary units)."""
    match = _SIZE_RE.match(value.strip().upper())
    if not match or float(match.group("number")) <= 0:
        raise InputError(f"{what} {value!r} is not a size (a byte count, or e.g. 700M, 3.9G)")
    size = int(float(match.group("number")) * _UNITS[match.group("unit")])
    if size < 1:
        raise InputError(f"{what} {value!r} is less than one byte")
    return size


@dataclass(frozen=True)
class BundleSource:
    """Where a bundle's bytes are: one file, or every part of a split bundle, in order."""

    parts: tuple[Path, ...]
    sizes: tuple[int, ...]

    @classmethod
    def of(cls, path: Path) -> BundleSource:
        """The bundle at ``path``: that file, or, for a first part ``NAME.001``, all its parts.

        Refuses (one line) a missing part between two present ones, a part that is not the
        first, and a part other than the last that is shorter than the first.
        """
        match = PART_RE.match(path.name)
        if match is None or not _exists(path):
            if match is None and not _exists(path) and _exists(path.with_name(part_name(path.name, 1))):
                raise NotABundle(f"{path}: no such file, but it was split: give its first part,"
                                 f" {part_name(path.name, 1)}")
            return cls((path,), (_size(path),))
        if match.group("number") != FIRST_PART:
            first = path.with_name(part_name(match.group("base"), 1))
            raise NotABundle(f"{path}: is part {int(match.group('number'))} of a split bundle;"
                             f" give the first part, {first}")
        parts = [path]
        while len(parts) < MAX_PARTS and _exists(nxt := path.with_name(part_name(match.group("base"),
                                                                           len(parts) + 1))):
            parts.append(nxt)
        later = sorted(p.name for p in path.parent.glob(match.group("base") + "." + "[0-9]" * PART_DIGITS)
                       if int(p.name.rsplit(".", 1)[1]) > len(parts) + 1)
        if later:
            missing = path.with_name(part_name(match.group("base"), len(parts) + 1))
            raise CorruptBundle(f"{missing}: part {len(parts) + 1} of the split bundle is missing"
                                f" ({later[0]} is there); carry it over again")
        sizes = tuple(_size(part) for part in parts)
        for number, (part, size) in enumerate(zip(parts[:-1], sizes[:-1]), start=1):
            if size != sizes[0]:
                raise CorruptBundle(f"{part}: part {number} has {size} bytes, part 1 has {sizes[0]}:"
                                    " only the last part may be shorter (parts reordered or cut, or"
                                    f" a stray {parts[-1].name} from another split)")
        if sizes[-1] > sizes[0]:
            raise CorruptBundle(f"{parts[-1]}: the last part has {sizes[-1]} bytes, more than part 1's"
                                f" {sizes[0]} (reordered, or from another split)")
        return cls(tuple(parts), sizes)

    @property
    def split(self) -> bool:
        return len(self.parts) > 1 or PART_RE.match(self.parts[0].name) is not None

    @property
    def size(self) -> int:
        return sum(self.sizes)

    def open(self) -> IO[bytes]:
        """A buffered, seekable reader of the whole bundle (across the parts)."""
        if not self.split:
            return open(self.parts[0], "rb")  # noqa: SIM115 - the caller closes it
        return io.BufferedReader(_PartsReader(self.parts, self.sizes), buffer_size=CHUNK)

    def part_at(self, offset: int) -> int:
        """The index of the part holding byte ``offset`` (the last part past the end)."""
        start = 0
        for index, size in enumerate(self.sizes):
            if offset < start + size:
                return index
            start += size
        return len(self.parts) - 1

    def where(self, start: int, end: int | None = None) -> str:
        """`` (in part NAME.002)`` or `` (in parts NAME.001-NAME.002)`` for the bytes
        ``start`` to ``end`` of a split bundle; empty for one file or an unknown offset."""
        if not self.split or start < 0:
            return ""
        first = self.part_at(start)
        last = self.part_at(max(start, (end if end is not None else start + 1) - 1))
        if first == last:
            return f" (in part {self.parts[first].name})"
        return f" (in parts {self.parts[first].name}-{self.parts[last].name})"

    def ended_early(self, offset: int) -> str:
        """Why a split bundle ends at ``offset`` before a listed member: the part after a
        full last part is missing, or the last part is cut. Empty for one file."""
        if not self.split:
            return ""
        if len(self.parts) == 1 or self.sizes[-1] == self.sizes[0]:
            missing = part_name(PART_RE.match(self.parts[0].name).group("base"), len(self.parts) + 1)
            return f" (part {missing} is missing: the parts end with a full part)"
        return f" (the last part, {self.parts[-1].name}, is cut short)"

    def beyond(self, end: int) -> str:
        """One line naming parts that lie wholly past the archive's end at ``end`` (left over
        from another split), or empty."""
        if not self.split:
            return ""
        extra = [part for index, part in enumerate(self.parts) if sum(self.sizes[:index]) >= end]
        if extra:
            return (f"{extra[0]}: is not part of this bundle (the bundle ends before it); remove it"
                    " or carry the parts of one split")
        return ""


class _PartsReader(io.RawIOBase):
    """The concatenation of ``parts`` as one read-only, seekable file, one part open at a time."""

    def __init__(self, parts: tuple[Path, ...], sizes: tuple[int, ...]) -> None:
        super().__init__()
        self._parts = parts
        self._starts = [sum(sizes[:index]) for index in range(len(sizes))]
        self._sizes = sizes
        self._total = sum(sizes)
        self._position = 0
        self._open: tuple[int, IO[bytes]] | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._total}[whence]
        if base + offset < 0:
            raise OSError("negative seek position")
        self._position = base + offset
        return self._position

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self._position >= self._total:
            return 0
        index = next(i for i in range(len(self._parts) - 1, -1, -1) if self._starts[i] <= self._position)
        handle = self._handle(index)
        within = self._position - self._starts[index]
        handle.seek(within)
        wanted = min(len(buffer), self._sizes[index] - within)
        count = handle.readinto(memoryview(buffer)[:wanted])
        if not count:  # a part shorter now than when the bundle was opened
            raise OSError(f"{self._parts[index]} ended early (it changed while being read)")
        self._position += count
        return count

    def _handle(self, index: int) -> IO[bytes]:
        if self._open is None or self._open[0] != index:
            self._close_part()
            self._open = (index, open(self._parts[index], "rb"))  # noqa: SIM115 - closed by close()
        return self._open[1]

    def _close_part(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None

    def close(self) -> None:
        self._close_part()
        super().close()


def split(source: BundleSource, base: str, size: int, output: Path,
          progress: Callable[[int], None] | None = None) -> list[Path]:
    """Write ``source`` as parts ``base.001``, ... of ``size`` bytes in ``output``; each part
    goes to a temporary name renamed when complete. Parts of an earlier split of ``base``
    beyond the new last one are removed, so the folder holds one split."""
    total = source.size
    count = max(1, -(-total // size))
    if count > MAX_PARTS:
        raise InputError(f"--size {size} cuts {total} bytes into {count} parts; at most {MAX_PARTS}:"
                         " choose a larger size")
    written = []
    with source.open() as reader:
        for number in range(1, count + 1):
            target = output / part_name(base, number)
            with output_file(target, "--output") as handle:
                remaining = min(size, total - (number - 1) * size)
                while remaining > 0:
                    block = reader.read(min(CHUNK, remaining))
                    if not block:
                        raise CorruptBundle(f"{source.parts[-1]}: ended early while being split")
                    handle.write(block)
                    remaining -= len(block)
                    if progress:
                        progress(len(block))
            written.append(target)
    number = count + 1
    while _exists(stale := output / part_name(base, number)):
        stale.unlink()
        number += 1
    return written


def _exists(path: Path) -> bool:
    return os.path.lexists(path)


def _size(path: Path) -> int:
    """The size of a bundle file or part, which must be a regular file (readers seek)."""
    try:
        info = os.stat(path)
    except OSError as error:
        raise NotABundle(f"{path}: cannot read it ({error.strerror or error})") from None
    if stat.S_ISDIR(info.st_mode):
        raise NotABundle(f"{path}: is a directory, not a bundle file")
    if not stat.S_ISREG(info.st_mode):
        raise NotABundle(f"{path}: this command seeks in the bundle, so it needs a regular file,"
                         " not a pipe or device ('bundle verify' reads a stream); save it to a file first")
    return info.st_size
