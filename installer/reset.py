"""``kubeferry reset``: the cluster torn down, every node ready for a fresh ``install``.

Each node gets ``kubeadm reset -f`` and the cleanup after it (installer/node_cleanup.py):
workers first (``--forks`` at a time), then the control planes one at a time, the first
control plane last: each control plane's reset removes its own etcd member through the
others, one member at a time, so etcd keeps its quorum until the last one goes. lb-only
hosts lose kubeferry's records (haproxy and keepalived keep running: a fresh install
rewrites their configuration only where it changed). The admin kubeconfig kubeferry wrote
beside the inventory names a cluster that is gone: it is removed.

A host that fails does not stop the others; the command then fails naming it, and a re-run
repeats what is left (every step is idempotent).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from kubeferry.errors import KubeferryError, OperationError
from kubeferry.installer import node_cleanup
from kubeferry.installer.context import InstallContext
from kubeferry.installer.inventory import Host


def order(ctx: InstallContext) -> list[list[Host]]:
    """Groups reset in turn: workers and lb-only hosts together, then each control plane alone."""
    inventory = ctx.inventory
    others = [host for host in inventory.hosts if not host.is_control_plane]
    planes = list(inventory.control_planes)
    return [others, *([host] for host in reversed(planes))]


def reset(ctx: InstallContext, report: Callable[[str], None]) -> None:
    failed: list[tuple[str, str]] = []

    def one(host: Host) -> None:
        try:
            report(f"[reset] {host.name}: {node_cleanup.reset_node(ctx, host)}")
        except KubeferryError as error:
            ctx.log(host)(f"FAILED reset: {error}")
            report(f"[reset] {host.name}: failed ({error})")
            failed.append((host.name, str(error)))

    for group in order(ctx):
        if len(group) > 1:
            with ThreadPoolExecutor(max_workers=max(1, min(ctx.options.forks, len(group)))) as pool:
                list(pool.map(one, group))
        elif group:
            one(group[0])
    if failed:
        name, why = failed[0]
        raise OperationError(f"{len(failed)} host(s) failed; first: {name}: {why} (log:"
                             f" {ctx.run_dir / (name + '.log')}); fix it and run the same command again")
