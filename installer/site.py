"""An installed site, for the Day-2 commands that take no bundle (remove-node, reset, certs).

They need what every phase sees (the inventory, SSH connections, per-host logs: an
``InstallContext``) but no bundle file. Where they re-run install phases (remove-node: os
and loadbalancer on the hosts that stay), those phases read two things of the bundle, its
OS (command paths) and its digest (their completion records): both are found on the nodes,
the OS from /etc/os-release, the digest from the records the install left, so the records
remove-node writes are the ones a later ``install`` with the same bundle finds "done".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kubeferry.errors import InputError, OperationError
from kubeferry.installer import facts
from kubeferry.installer.context import InstallContext, InstallOptions
from kubeferry.installer.inventory import Host, Inventory
from kubeferry.installer.platform import data, describe, platform
from kubeferry.installer.workflow import MARKER_DIR
from kubeferry.outputs import probe_directory


@dataclass(frozen=True)
class InstalledRelease:
    """What the membership phases read of a bundle, found on an installed node."""

    os: str
    digest: str
    path: str = "the bundle the site was installed from"


def context(inventory: Inventory, *, run_dir: Path | None, forks: int = 10,
            accept_new_host_keys: bool = False, phases: tuple[str, ...] = (),
            echo: Callable[[str], None] = print) -> InstallContext:
    """An InstallContext with no bundle (set ``bundle`` to an InstalledRelease for the phases
    that read one)."""
    run_dir = run_dir or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    probe_directory(run_dir, "--run-dir")
    options = InstallOptions(forks=forks, accept_new_host_keys=accept_new_host_keys, yes=True,
                             run_dir=run_dir, phases=phases)
    return InstallContext(inventory=inventory, bundle=None, options=options, echo=echo)  # type: ignore[arg-type]


def installed_release(ctx: InstallContext, host: Host) -> InstalledRelease:
    """The OS and bundle digest ``host`` was installed with (OperationError if none was)."""
    conn = ctx.conn(host)
    records = conn.run(f"cat {MARKER_DIR}/os {MARKER_DIR}/* 2>/dev/null | head -n 1", check=False)
    fields = records.stdout.split()
    if not fields or not fields[0].startswith("sha256:"):
        raise OperationError(f"{host.name}: no completion record in {MARKER_DIR}: kubeferry did not install"
                             " this site (or it was reset)")
    os_release = facts.OS_RELEASE.read(conn)
    for name in data()["oses"]:
        if platform(name).matches(os_release):
            return InstalledRelease(os=name, digest=fields[0])
    raise OperationError(f"{host.name}: {describe(os_release)} is not an OS kubeferry installs")


def without(inventory: Inventory, name: str) -> Inventory:
    """The inventory with host ``name`` taken out (InputError when it is not there)."""
    inventory.host(name)
    hosts = tuple(host for host in inventory.hosts if host.name != name)
    if not any(host.is_control_plane for host in hosts):
        raise InputError(f"{name} is the only control plane of {inventory.source}: to take the whole cluster"
                         " down use `kubeferry reset`")
    return Inventory(cluster=inventory.cluster, registry=inventory.registry, hosts=hosts,
                     source=inventory.source, warnings=inventory.warnings)
