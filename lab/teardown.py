"""Removing what a site's journal records, one kind of resource at a time.

Each remover accepts a resource that is already gone (or was never made): ``down`` after
a crash, or a second ``down``, finds some of them missing, and that is fine.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
from pathlib import Path
from typing import Any, Callable

from kubeferry.errors import OperationError
from kubeferry.lab import cgroups, leftovers, network, proc


def _process(resource: dict[str, Any]) -> None:
    pid = resource.get("pid")
    if pid is None:
        return  # recorded but never started (its cgroup catches a straggler)
    sig = signal.SIGKILL if resource.get("stop") == "kill" else signal.SIGTERM
    proc.stop(pid, resource.get("started"), sig=sig, grace=resource.get("grace", 5.0))


def _cgroup(resource: dict[str, Any]) -> None:
    cgroups.remove(Path(resource["path"]))


def _netns(resource: dict[str, Any]) -> None:
    network.delete_netns(resource["name"])


def _link(resource: dict[str, Any]) -> None:
    network.delete_link(resource["name"])


def _iptables(resource: dict[str, Any]) -> None:
    network.delete_rule(resource["rule"])


def _dir(resource: dict[str, Any]) -> None:
    path = Path(resource["path"])
    mounted = leftovers.mounts_under([path])
    if mounted:
        raise OperationError(
            f"{mounted[0]} is still mounted inside {path}; not removing it (umount it first)"
        )
    if path.exists():
        shutil.rmtree(path)
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # the lab's data root, once no site uses it


REMOVERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "process": _process,
    "cgroup": _cgroup,
    "netns": _netns,
    "link": _link,
    "iptables": _iptables,
    "dir": _dir,
}


def remove(resource: dict[str, Any]) -> None:
    """Remove one recorded resource (a no-op when it is already gone)."""
    REMOVERS[resource["kind"]](resource)
