"""The lab's network: one bridge on the admin host, one network namespace per lab host.

Nodes get an address on the bridge's subnet and no default route. The host's firewall
holds the air gap even if a node adds a route itself: traffic between lab hosts is
accepted, lab traffic to anywhere else is rejected, and nodes cannot open connections
to the admin host (the admin host connects to them, never the other way round).
IPv6 is off on every lab link, so link-local addresses cannot bypass those rules.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Sequence

from kubeferry.errors import InputError, OperationError
from kubeferry.lab import proc

NETNS_DIR = Path("/run/netns")
# ``ip netns exec NS`` bind-mounts the files of NETNS_ETC/NS over /etc for what it runs.
NETNS_ETC = Path("/etc/netns")
SITE_RESOLV_CONF = "# kubeferry lab: air-gapped site, no DNS server\n"
INNER_INTERFACE = "eth0"


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def in_netns(netns: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside network namespace ``netns``."""
    return ["ip", "netns", "exec", netns, *argv]


def _disable_ipv6(interface: str, netns: str | None = None) -> None:
    keys = [f"net.ipv6.conf.{interface}.disable_ipv6=1"]
    if netns:
        keys += ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]
    argv = ["sysctl", "-q", "-w", *keys]
    if not Path("/proc/sys/net/ipv6").exists():
        return  # a kernel without IPv6 has nothing to disable
    proc.run(in_netns(netns, argv) if netns else argv)


def add_bridge(name: str, address: ipaddress.IPv4Interface) -> None:
    """The lab's switch, holding the admin host's lab address."""
    if not link_exists(name):
        proc.run(["ip", "link", "add", name, "type", "bridge"])
    _disable_ipv6(name)
    _ensure_address(name, address)
    proc.run(["ip", "link", "set", name, "up"])


def _ensure_address(interface: str, address: ipaddress.IPv4Interface, netns: str | None = None):
    show = ["ip", "-4", "-o", "addr", "show", "dev", interface]
    current = proc.run(in_netns(netns, show) if netns else show).stdout.decode()
    if f" {address.with_prefixlen} " not in current:
        add = ["ip", "addr", "add", address.with_prefixlen, "dev", interface]
        proc.run(in_netns(netns, add) if netns else add)


def add_netns(name: str) -> None:
    """An empty network namespace: loopback up, IPv6 off."""
    if not netns_exists(name):
        proc.run(["ip", "netns", "add", name])
    _disable_ipv6("lo", name)
    proc.run(in_netns(name, ["ip", "link", "set", "lo", "up"]))


def add_veth(
    host_end: str, netns: str, bridge: str, address: ipaddress.IPv4Interface
) -> None:
    """A cable from the bridge into ``netns``: eth0 there, with ``address`` and no route out."""
    if not link_exists(host_end):
        proc.run(
            ["ip", "link", "add", host_end, "type", "veth",
             "peer", "name", INNER_INTERFACE, "netns", netns]
        )
    _disable_ipv6(host_end)
    proc.run(["ip", "link", "set", host_end, "master", bridge, "up"])
    _disable_ipv6(INNER_INTERFACE, netns)
    _ensure_address(INNER_INTERFACE, address, netns)
    proc.run(in_netns(netns, ["ip", "link", "set", INNER_INTERFACE, "up"]))


def delete_link(name: str) -> None:
    if link_exists(name):
        proc.run(["ip", "link", "delete", name])


def delete_netns(name: str) -> None:
    if netns_exists(name):
        proc.run(["ip", "netns", "delete", name])


def firewall_rules(bridge: str, tag: str) -> list[list[str]]:
    """The iptables rules (filter table) that keep a lab air-gapped, as ``-I CHAIN`` specs.

    Order matters: each is inserted at position 1, so the last one listed ends up first.
    """
    comment = ["-m", "comment", "--comment", tag]
    return [
        # Nothing from the lab leaves it, nothing from outside enters it through the host.
        ["FORWARD", "-i", bridge, "-j", "REJECT", *comment],
        ["FORWARD", "-o", bridge, "-j", "REJECT", *comment],
        # Lab hosts talk to each other (bridged frames pass FORWARD when br_netfilter is on).
        ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT", *comment],
        # Lab hosts cannot open connections to the admin host; replies to its SSH pass.
        ["INPUT", "-i", bridge, "-m", "conntrack", "!", "--ctstate", "ESTABLISHED,RELATED",
         "-j", "REJECT", *comment],
    ]


def add_rule(rule: Sequence[str]) -> None:
    """Insert an iptables rule at the top of its chain unless it is there already."""
    chain, spec = rule[0], list(rule[1:])
    if proc.run(["iptables", "-w", "5", "-C", chain, *spec], check=False).returncode != 0:
        proc.run(["iptables", "-w", "5", "-I", chain, "1", *spec])


def delete_rule(rule: Sequence[str]) -> None:
    """Remove every copy of an iptables rule."""
    chain, spec = rule[0], list(rule[1:])
    for _ in range(100):
        if proc.run(["iptables", "-w", "5", "-C", chain, *spec], check=False).returncode != 0:
            return
        proc.run(["iptables", "-w", "5", "-D", chain, *spec])
    raise OperationError(f"iptables rule '{' '.join(rule)}' keeps coming back")


def used_networks() -> list[ipaddress.IPv4Network]:
    """IPv4 networks already routed or addressed on this host (root namespace)."""
    networks = []
    out = proc.run(["ip", "-4", "-o", "addr", "show"]).stdout.decode()
    for match in re.finditer(r"\binet (\S+)", out):
        networks.append(ipaddress.IPv4Interface(match.group(1)).network)
    routes = proc.run(["ip", "-4", "route", "show"]).stdout.decode()
    for line in routes.splitlines():
        first = line.split()[0] if line.split() else ""
        if first and first != "default":
            try:
                networks.append(ipaddress.IPv4Network(first, strict=False))
            except ValueError:
                continue
    return networks


def check_subnet_free(subnet: ipaddress.IPv4Network) -> None:
    """Refuse a subnet that overlaps one this host already routes or addresses."""
    for network in used_networks():
        if network.overlaps(subnet):
            raise InputError(
                f"lab subnet {subnet} overlaps {network}, already used on this host; "
                "choose another with --subnet (or take down the lab using it)"
            )


def free_subnet(start: str = "10.88.0.0/24", count: int = 64) -> ipaddress.IPv4Network:
    """The first /24 from ``start`` on that no route or address on this host overlaps."""
    first = ipaddress.IPv4Network(start)
    used = used_networks()
    for offset in range(count):
        candidate = ipaddress.IPv4Network(
            (int(first.network_address) + offset * first.num_addresses, first.prefixlen)
        )
        if not any(candidate.overlaps(network) for network in used):
            return candidate
    raise OperationError(f"no free /{first.prefixlen} among {count} from {start} on this host")


_RATE = re.compile(r"^\d+(\.\d+)?(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)$")
_TIME = re.compile(r"^\d+(\.\d+)?(us|ms|s)$")


def shape(host_end: str, netns: str, rate: str | None, delay: str | None) -> None:
    """Limit a lab host's link in both directions: ``rate`` like 100mbit, ``delay`` like 1ms.

    Rate alone uses a token bucket (tbf); a delay needs netem, which some kernels lack.
    """
    if rate is not None and not _RATE.match(rate):
        raise InputError(f"link rate {rate!r} is not a tc rate like 100mbit")
    if delay is not None and not _TIME.match(delay):
        raise InputError(f"link delay {delay!r} is not a tc time like 1ms")
    if rate is None and delay is None:
        unshape(host_end, netns)
        return
    if delay is not None:
        qdisc = ["netem", "delay", delay] + (["rate", rate] if rate else [])
    else:
        qdisc = ["tbf", "rate", rate, "burst", "256kb", "latency", "50ms"]
    for argv in (
        ["tc", "qdisc", "replace", "dev", host_end, "root", *qdisc],
        in_netns(netns, ["tc", "qdisc", "replace", "dev", INNER_INTERFACE, "root", *qdisc]),
    ):
        result = proc.run(argv, check=False)
        if result.returncode != 0:
            error = result.stderr.decode(errors="replace").strip()
            if "netem" in qdisc and "unknown" in error.lower():
                raise OperationError(
                    "link delay needs the kernel's netem qdisc (CONFIG_NET_SCH_NETEM), "
                    "which this kernel lacks; shape with a rate only"
                )
            raise OperationError(f"'{' '.join(argv)}' failed: {error}")


def unshape(host_end: str, netns: str) -> None:
    """Remove any shaping from a lab host's link."""
    for argv in (
        ["tc", "qdisc", "del", "dev", host_end, "root"],
        in_netns(netns, ["tc", "qdisc", "del", "dev", INNER_INTERFACE, "root"]),
    ):
        proc.run(argv, check=False)
