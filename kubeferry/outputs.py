"""Writing output files without losing anything: temp name then rename, but never over a
device, a FIFO or a symlink, and every OSError mapped to one line naming the path.

A regular file (or a new one) is written to ``.NAME.partial-PID`` beside it and renamed
into place, so a reader never sees half a file. A character device or FIFO (``/dev/null``,
``/dev/stdout``, a named pipe) is streamed into: renaming over it would turn the device
into a regular file. A symlink is refused rather than silently replaced. Partials left
by a killed run (``kill -9``) are removed by the next write of the same file, unless the
process that owns them is still alive.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from kubeferry.errors import InputError, KubeferryError, OperationError

# Faults of the machine (exit 1); every other OSError on an output path is an input fault (exit 2).
_OPERATION_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.ENOMEM}


def os_error(error: OSError, what: str, path: Path | str, action: str = "write") -> KubeferryError:
    """One line for ``error`` on ``path``: exit 1 for a full disk or an I/O error, else exit 2
    (a path that cannot work: missing parent, read-only, no permission, a directory)."""
    cause = error.strerror or str(error)
    if error.errno in _OPERATION_ERRNOS:
        return OperationError(f"{what} {path}: cannot {action} it ({cause}); free space and run again")
    return InputError(f"{what} {path}: cannot {action} it ({cause})")


def partial_name(target: Path, pid: int | None = None) -> Path:
    """``.NAME.partial-PID`` beside ``target``: where a write in progress lives."""
    return target.with_name(f".{target.name}.partial-{pid or os.getpid()}")


def remove_stale_partials(target: Path) -> list[Path]:
    """Remove the partials of ``target`` whose writer is gone; keep a live writer's."""
    removed = []
    try:
        candidates = list(target.parent.glob(f".{target.name}.partial-*"))
    except OSError:
        return removed
    for partial in candidates:
        pid_text = partial.name.rsplit("-", 1)[-1]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or _alive(int(pid_text)):
            continue
        try:
            partial.unlink()
            removed.append(partial)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kind_of(path: Path) -> str:
    """``missing``, ``regular``, ``stream`` (character device or FIFO), ``symlink``,
    ``directory`` or ``other``, without following a symlink."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "other"
    if stat.S_ISLNK(mode):
        try:
            target_mode = os.stat(path).st_mode
        except OSError:
            return "symlink"
        # /dev/stdout -> /proc/self/fd/1 -> a pipe: a stream, not a file to replace
        return "stream" if stat.S_ISCHR(target_mode) or stat.S_ISFIFO(target_mode) else "symlink"
    if stat.S_ISREG(mode):
        return "regular"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return "stream"
    return "other"


def check_target(path: Path, what: str) -> str:
    """The kind of ``path`` if it may be written (InputError naming ``what`` if not)."""
    kind = kind_of(path)
    if kind == "symlink":
        raise InputError(f"{what} {path} is a symbolic link (to {os.readlink(path)}); refusing to"
                         " replace it: name the file itself")
    if kind == "directory":
        raise InputError(f"{what} {path} is a directory; name a file (or move the directory away)")
    if kind == "other":
        raise InputError(f"{what} {path} is not a regular file, a character device or a FIFO")
    return kind


@contextmanager
def output_file(path: Path | str, what: str = "--output", fsync: bool = True,
                mode: int = 0o644) -> Iterator[IO[bytes]]:
    """A binary handle whose content lands at ``path`` when the block ends without error.

    ``-`` is stdout; a device or FIFO is written in place; a regular file is written under
    a partial name and renamed. On an error nothing at ``path`` changes. Only failures of
    the output itself (open, write, flush, rename) are reported as about ``path``; the
    block's own errors pass through unchanged.
    """
    if str(path) == "-":
        guarded = _Guarded(sys.stdout.buffer, what, "-")
        yield guarded  # type: ignore[misc]
        guarded.flush()
        return
    target = Path(path)
    kind = check_target(target, what)
    if kind == "stream":
        try:
            handle = open(target, "wb")  # noqa: SIM115 - closed below
        except OSError as error:
            raise os_error(error, what, target) from None
        with handle:
            guarded = _Guarded(handle, what, target)
            yield guarded  # type: ignore[misc]
            guarded.flush()
        return
    remove_stale_partials(target)
    partial = partial_name(target)
    try:
        try:
            partial.unlink(missing_ok=True)  # ours from a process that had this pid before
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_EXCL, mode)
        except OSError as error:
            raise os_error(error, what, target) from None
        handle = os.fdopen(fd, "wb")
        guarded = _Guarded(handle, what, target)
        try:
            yield guarded  # type: ignore[misc]
            guarded.flush()
            if fsync:
                guarded.fsync()
        except BaseException:
            # close() flushes again what a full disk refused: that second failure must not
            # replace the line that names the output
            with contextlib.suppress(OSError):
                handle.close()
            raise
        try:
            handle.close()
        except OSError as error:
            raise os_error(error, what, target) from None
        if kind_of(target) not in ("missing", "regular"):
            check_target(target, what)  # it changed under us: refuse, as above
        try:
            os.replace(partial, target)
        except OSError as error:
            raise os_error(error, what, target) from None
    finally:
        partial.unlink(missing_ok=True)


class _Guarded:
    """A binary file whose write, flush and fsync failures name the output (one line)."""

    def __init__(self, handle: IO[bytes], what: str, path: Path | str) -> None:
        self._handle, self._what, self._path = handle, what, path

    def write(self, data: bytes) -> int:
        try:
            return self._handle.write(data)
        except OSError as error:
            raise os_error(error, self._what, self._path) from None

    def flush(self) -> None:
        _flush(self._handle, self._what, self._path)

    def fsync(self) -> None:
        try:
            os.fsync(self._handle.fileno())
        except OSError as error:
            raise os_error(error, self._what, self._path) from None

    def __getattr__(self, name: str) -> object:
        return getattr(self._handle, name)


def _flush(handle: IO[bytes], what: str, path: Path | str) -> None:
    try:
        handle.flush()
    except OSError as error:
        raise os_error(error, what, path) from None


def probe_directory(path: Path, what: str) -> None:
    """Create ``path`` if needed and check a file can be written there, so a read-only, full or
    unwritable directory is named up front (exit 2; 1 for a full disk), not after the work."""
    if kind_of(path) not in ("missing", "directory"):
        raise InputError(f"{what} {path} is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".kubeferry-probe-", dir=path)
        os.close(fd)
        os.unlink(name)
    except OSError as error:
        raise os_error(error, what, path) from None
