"""``kubeferry remove-node NAME``: a node out of the cluster, and out of every other host's
configuration, in kubeadm's documented order.

The node is still in the inventory when the command runs (its address and SSH settings are
how it is reached to be reset); afterwards the operator deletes it from the file. Steps:

1. refusals, before anything changes: NAME is the only control plane (that is ``reset``);
   NAME runs an etcd member and removing it would leave fewer members than a majority of
   the current ones (2 of 2: etcd would lose quorum the moment one more member stopped);
2. ``kubectl drain`` from another control plane (``--ignore-daemonsets
   --delete-emptydir-data --force``, bounded by ``--timeout``); skipped when the Node is
   gone already (a re-run after a failure later on);
3. ``kubeadm reset -f`` on the node (on a control plane kubeadm first removes its own
   member from the stacked etcd), then what reset leaves (installer/node_cleanup.py);
4. ``kubectl delete node`` (after the reset, so its kubelet cannot register it again);
5. the hosts that stay get the install's membership phases again for the inventory
   without NAME: ``os`` (/etc/hosts, chrony's server and allow list) and ``loadbalancer``
   (haproxy's backends, keepalived's peers), with completion records a later ``install``
   of the same bundle with the edited inventory finds done.
"""

from __future__ import annotations

import shlex
import time
from typing import Callable

from kubeferry.errors import OperationError
from kubeferry.installer import controlplane, node_cleanup, operations, site
from kubeferry.installer import kube_commands as kube
from kubeferry.installer.context import InstallContext
from kubeferry.installer.inventory import Host
from kubeferry.installer.ssh import CommandFailed, Connection
from kubeferry.installer.workflow import HostResult, run

DRAIN_TIMEOUT = "300s"
DELETE_RETRY = 30.0  # seconds: haproxy checks a backend every 3 s, down after 3 failures
MEMBERSHIP_PHASES = ("os", "loadbalancer")


def check(ctx: InstallContext, name: str) -> tuple[Host, Host]:
    """(the node, the control plane that drives the removal); raises the refusals of step 1."""
    node = ctx.inventory.host(name)
    rest = site.without(ctx.inventory, name)  # InputError for the only control plane
    driver = rest.first_control_plane
    if node.is_control_plane:
        members = controlplane.etcd_members(ctx)
        if node in members:
            needed = controlplane.quorum(len(members))
            if len(members) - 1 < needed:
                raise OperationError(
                    f"removing control plane {name} would leave {len(members) - 1} of {len(members)} etcd"
                    f" members, fewer than the {needed} a majority of the current members needs: add a"
                    " control plane first (put it in the inventory and run `kubeferry install`)")
    return node, driver


def node_registered(ctx: InstallContext, driver: Host, name: str) -> bool:
    result = ctx.conn(driver).run(f"{kube.KUBECTL} get node {shlex.quote(name)} -o name", timeout=60,
                                  check=False)
    if result.ok:
        return True
    if "NotFound" in result.stderr or "not found" in result.stderr:
        return False
    raise OperationError(f"{driver.name}: kubectl get node {name} failed: "
                         f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}")


def remove(ctx: InstallContext, name: str, report: Callable[[str], None],
           phase_report: Callable[[HostResult], None]) -> list[HostResult]:
    """Steps 2-5 (``check`` first); one line per step through ``report``."""
    node, driver = check(ctx, name)
    conn = ctx.conn(driver)
    registered = node_registered(ctx, driver, name)
    if registered:
        operations.run(conn, f"{kube.KUBECTL} drain {shlex.quote(name)} --ignore-daemonsets"
                             f" --delete-emptydir-data --force --timeout={DRAIN_TIMEOUT}", timeout=360)
        report(f"[remove-node] {name}: drained (from {driver.name})")
    else:
        report(f"[remove-node] {name}: not registered in the cluster (deleted before): nothing to drain")
    reset = node_cleanup.reset_node(ctx, node)
    report(f"[remove-node] {name}: {reset}")
    if registered:
        delete_node(conn, name)
        report(f"[remove-node] {name}: Node deleted")
    return update_others(ctx, name, phase_report)


def delete_node(conn: Connection, name: str) -> None:
    """``kubectl delete node`` through the endpoint. Right after a control plane's reset the
    load balancer may still hand a request to its API server, until haproxy's health check
    marks that backend down (a few seconds): a connection that fails is tried again, for at
    most DELETE_RETRY seconds."""
    deadline = time.monotonic() + DELETE_RETRY
    while True:
        try:
            operations.run(conn, f"{kube.KUBECTL} delete node {shlex.quote(name)}", timeout=120)
            return
        except CommandFailed as failed:
            if "Unable to connect to the server" not in failed.result.stderr or time.monotonic() > deadline:
                raise
        time.sleep(2)


def update_others(ctx: InstallContext, name: str,
                  phase_report: Callable[[HostResult], None]) -> list[HostResult]:
    """The membership phases on the hosts that stay, for the inventory without ``name``."""
    rest = site.without(ctx.inventory, name)
    from kubeferry.installer.phases import all_phases  # the phases import the workflow, which is heavy

    phases = [phase for phase in all_phases() if phase.name in MEMBERSHIP_PHASES]
    staying = site.context(rest, run_dir=ctx.run_dir, forks=ctx.options.forks,
                           accept_new_host_keys=ctx.options.accept_new_host_keys, phases=MEMBERSHIP_PHASES)
    staying.connector = lambda host: ctx.conn(host)  # the same SSH sessions (closed with ``ctx``)
    staying.bundle = site.installed_release(staying, rest.first_control_plane)  # type: ignore[assignment]
    return run(staying, phases, report=phase_report)
