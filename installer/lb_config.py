"""haproxy.cfg, keepalived.conf and keepalived's haproxy check, rendered from
``manifests/loadbalancer.yaml`` for one lb host of an inventory."""

from __future__ import annotations

import ipaddress
from string import Template
from typing import Any

from kubeferry import manifests
from kubeferry.errors import InputError
from kubeferry.installer.inventory import APISERVER_PORT, Host, Inventory


def settings() -> dict[str, Any]:
    return manifests.load("loadbalancer")


def _fill(template: str, **values: Any) -> str:
    return Template(template).substitute({key: str(value) for key, value in values.items()})


def haproxy_cfg(inventory: Inventory) -> str:
    data = settings()["haproxy"]
    servers = [_fill(data["server"], name=host.name, address=host.address, apiserver_port=APISERVER_PORT)
               for host in inventory.control_planes]
    return _fill(data["template"], port=inventory.cluster.endpoint_port, servers="\n".join(servers))


def check_script(inventory: Inventory) -> str:
    port = inventory.cluster.endpoint_port
    return _fill(settings()["checkScript"]["template"], port=port, port_hex=f"{port:04X}")


def router_id(vip: str) -> int:
    """VRRP virtual_router_id (1-255, unique on the segment): the VIP's last octet, 0 -> 255."""
    return int(ipaddress.ip_address(vip).packed[-1]) or 255


def priority(inventory: Inventory, host: Host) -> int:
    values = settings()["priority"]
    index = [h.name for h in inventory.lb_hosts].index(host.name)
    return max(1, values["first"] - index * values["step"])


def keepalived_conf(inventory: Inventory, host: Host, interface: str) -> str:
    data = settings()["keepalived"]
    vip = inventory.cluster.vip
    if vip is None:
        raise InputError(f"{inventory.source}: cluster.vip is needed for keepalived")
    peers = [h for h in inventory.lb_hosts if h.name != host.name]
    unicast = ""
    if peers:
        lines = "\n".join(_fill(data["peer"], address=peer.address) for peer in peers)
        unicast = _fill(data["unicast"], address=host.address, peers=lines)
    return _fill(data["template"], vip=vip, port=inventory.cluster.endpoint_port, name=host.name,
                 check_script=settings()["checkScript"]["path"], interface=interface,
                 router_id=router_id(vip), priority=priority(inventory, host), unicast=unicast)


def defaults_file(os_family: str) -> tuple[str, str]:
    """(path, content) of the keepalived options file on this OS family (deb or rpm)."""
    entry = settings()["defaults"][os_family]
    return entry["path"], entry["content"]
