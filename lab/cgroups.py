"""The cgroup v2 sub-trees the lab gives each node and service host.

A node's systemd needs a cgroup2 hierarchy it can write: the node's init is placed in its
own cgroup and started in a new cgroup namespace, so the cgroup2 it mounts at
/sys/fs/cgroup is rooted there. The same cgroup lets ``down`` find every process the node
made, even ones that escaped its pid namespace bookkeeping.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from kubeferry.errors import OperationError
from kubeferry.lab import proc

LAB_GROUP = "kubeferry-lab"


def unified_root() -> Path:
    """The cgroup2 mount: /sys/fs/cgroup (unified hosts) or /sys/fs/cgroup/unified (hybrid)."""
    for candidate in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if _fs_type(candidate) == "cgroup2":
            return candidate
    raise OperationError(
        "no cgroup2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified: the lab's systemd "
        "nodes need one (boot the host with cgroup v2 or the hybrid layout)"
    )


def _fs_type(path: Path) -> str | None:
    """The type of the file system mounted last on ``path`` (the visible one), if any."""
    found = None
    with open("/proc/self/mountinfo") as stream:
        for line in stream:
            fields = line.split()
            if fields[4] == str(path):
                found = fields[fields.index("-") + 1]
    return found


def site_path(site: str) -> Path:
    return unified_root() / LAB_GROUP / site


def create(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OperationError(
            f"cannot create cgroup {path} ({error.strerror}): the lab needs a writable cgroup2 "
            "hierarchy (run as root on the host, not in an unprivileged container)"
        ) from error


def procs(path: Path) -> list[int]:
    """Every process in ``path`` or below it."""
    pids: list[int] = []
    if not path.is_dir():
        return pids
    for directory, _subdirs, _files in os.walk(path):
        try:
            text = (Path(directory) / "cgroup.procs").read_text()
        except OSError:
            continue
        pids.extend(int(pid) for pid in text.split())
    return pids


def remove(path: Path, timeout: float = 15.0) -> None:
    """Kill what is left in ``path`` (by pid), then remove it and its children, deepest first."""
    if not path.is_dir():
        return

    def emptied() -> bool:
        for pid in procs(path):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return not procs(path)

    if not proc.wait_until(emptied, timeout, interval=0.2):
        raise OperationError(f"processes {procs(path)} in {path} did not exit in {timeout:.0f}s")

    def removed() -> bool:
        for directory, _subdirs, _files in os.walk(path, topdown=False):
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                pass
            except OSError:
                return False
        return not path.exists()

    if not proc.wait_until(removed, timeout, interval=0.2):
        raise OperationError(f"cgroup {path} could not be removed in {timeout:.0f}s")
    # Drop the site and lab levels too once empty (another site may still be using them).
    for parent in path.parents:
        if LAB_GROUP not in parent.parts:
            break
        try:
            parent.rmdir()
        except OSError:
            break
