"""Time sync: chrony on every node, the first control plane as the site's only server.

Used by two phases, whichever first finds chrony on the node: ``os`` (when the node
already has chronyd) and ``packages`` (which installs chrony from the bundle, then
configures it). A re-run finds the configuration in place and changes nothing.
"""

from __future__ import annotations

import ipaddress
from string import Template

from kubeferry.installer import facts, operations
from kubeferry.installer.context import InstallContext
from kubeferry.installer.inventory import Host
from kubeferry.installer.operations import Step
from kubeferry.installer.platform import data, platform


def allow_lines(server: Host, addresses: list[str], nodes: list[Host]) -> list[str]:
    """``allow`` for the server's own subnet, and for each node outside it."""
    networks = []
    for text in addresses:
        try:
            interface = ipaddress.ip_interface(text)
        except ValueError:
            continue
        if str(interface.ip) == server.address:
            networks.append(interface.network)
    lines = [f"allow {network}" for network in networks]
    for node in nodes:
        address = ipaddress.ip_address(node.address)
        if node.name != server.name and not any(address in network for network in networks):
            lines.append(f"allow {node.address}")
    return lines


def site_inputs(ctx: InstallContext) -> list[str]:
    """What of the inventory chrony's configuration follows: the server, every node's address."""
    server = ctx.inventory.first_control_plane
    return [f"{server.name} {server.address}", *sorted(host.address for host in ctx.inventory.hosts)]


def config_text(ctx: InstallContext, host: Host) -> str:
    """The chrony configuration ``host`` gets (reads the server's addresses on the server)."""
    spec = platform(ctx.bundle.os).chrony
    templates = data()["chrony"]
    server = ctx.inventory.first_control_plane
    values = {"driftfile": spec["driftfile"], "logdir": spec["logdir"]}
    if host.name == server.name:
        addresses = facts.IPV4_ADDRESSES.read(ctx.conn(host))
        allow = allow_lines(server, addresses, list(ctx.inventory.hosts))
        return Template(templates["server"]).substitute(values, allow="\n".join(allow))
    return Template(templates["client"]).substitute(values, server=server.address)


def installed(ctx: InstallContext, host: Host) -> bool:
    return facts.command_exists("chronyd").read(ctx.conn(host))


def chrony_steps(ctx: InstallContext, host: Host) -> list[Step]:
    """chrony configured as server or client, enabled, running; restarted when changed."""
    conn = ctx.conn(host)
    spec = platform(ctx.bundle.os).chrony
    steps = operations.file(conn, spec["config"], config_text(ctx, host))
    return steps + operations.service(conn, spec["service"], enabled=True, running=True,
                                      restart=bool(steps))
