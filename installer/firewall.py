"""firewalld on the nodes, as the inventory's ``os.firewalld`` asks: ``stopped`` (stopped and
disabled, the runbooks' way and the default) or ``open`` (running, with the ports and IP
protocols each node's roles need opened in its default zone, permanently).

The port table is data (``manifests/nodeprep.yaml`` ``os.firewalld_open``): kubeadm's ports
per role, calico's (BGP 179, VXLAN 4789, Typha 5473, IP-in-IP = IP protocol 4, ``ipencap``
in /etc/protocols), the NodePort range on every Kubernetes node, and on the hosts holding the
VIP the API endpoint's port and keepalived's VRRP. The permanent configuration is read and
changed with ``firewall-offline-cmd`` (it works whether firewalld runs or not), then firewalld
is enabled and started, or restarted when its configuration changed while it ran.
"""

from __future__ import annotations

import shlex

from kubeferry.installer import operations
from kubeferry.installer.context import InstallContext
from kubeferry.installer.facts import Fact
from kubeferry.installer.inventory import Host
from kubeferry.installer.operations import Step
from kubeferry.installer.platform import data

SERVICE = "firewalld"


def wanted(ctx: InstallContext, host: Host) -> tuple[list[str], list[str]]:
    """(ports as ``6443/tcp``, IP protocol names) ``host`` needs open, in a stable order."""
    table = data()["os"]["firewalld_open"]
    ports: list[str] = []
    protocols: list[str] = []
    roles = list(host.roles)
    if host.is_kubernetes_node:
        roles.append("kubernetes")
    if host in ctx.inventory.lb_hosts:
        roles.append("vip")
        ports.append(f"{ctx.inventory.cluster.endpoint_port}/tcp")
    for role in roles:
        entry = table.get(role, {})
        ports += [p for p in entry.get("ports", []) if p not in ports]
        protocols += [p for p in entry.get("protocols", []) if p not in protocols]
    return list(dict.fromkeys(ports)), protocols


def _listed(what: str) -> Fact[list[str]]:
    return Fact(f"firewalld-{what}", f"firewall-offline-cmd --list-{what} 2>/dev/null", str.split)


INSTALLED = Fact("firewalld-installed", "command -v firewall-offline-cmd >/dev/null && echo yes",
                 lambda out: out.strip() == "yes")


def steps(ctx: InstallContext, host: Host) -> list[Step]:
    """What firewalld on ``host`` still needs for the inventory's ``os.firewalld``."""
    conn = ctx.conn(host)
    if ctx.inventory.os.firewalld == "stopped":
        return operations.service(conn, SERVICE, enabled=False, running=False)
    if not INSTALLED.read(conn):
        ctx.log(host)("os: firewalld is not installed: nothing to open")
        return []
    ports, protocols = wanted(ctx, host)
    missing_ports = [p for p in ports if p not in _listed("ports").read(conn)]
    missing_protocols = [p for p in protocols if p not in _listed("protocols").read(conn)]
    planned = []
    # one option kind per call: firewall-offline-cmd refuses --add-port beside --add-protocol
    for option, missing in (("--add-port", missing_ports), ("--add-protocol", missing_protocols)):
        if missing:
            planned.append(Step(f"firewalld: open {' '.join(missing)}",
                                "firewall-offline-cmd "
                                + " ".join(shlex.quote(f"{option}={item}") for item in missing)
                                + " >/dev/null"))
    return planned + operations.service(conn, SERVICE, enabled=True, running=True, restart=bool(planned))
