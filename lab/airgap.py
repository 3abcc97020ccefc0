"""The air-gap counter: every lab namespace counts (and refuses) packets that try to leave.

Each lab host (node, service host, the admin host) gets an on-link default route, so a
packet for an outside address is really sent to the firewall instead of failing with
ENETUNREACH before anything can see it; the namespace's own filter OUTPUT chain then
jumps every packet for outside the lab subnet, and every new connection to the internet
side's ``.1`` (not the late FIN of a closed SSH connection), to the chain ``CHAIN``, whose
single REJECT rule counts it. Link-local multicast and the limited broadcast pass
uncounted: no router forwards them. The REJECT happens inside the namespace: such a
packet never reaches the bridge (not even an ARP request for it), so nothing leaves the
machine. The counters start at zero when the namespace is made and go with it.

On EL nodes the rules are xtables (``iptables-legacy``): firewalld's nftables backend, as EL
runs it, flushes every nftables rule when it starts and stops (also iptables-nft's), and the
counter must outlive what the node's own OS does to its firewall.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Sequence

from kubeferry.errors import OperationError
from kubeferry.lab import network, proc

CHAIN = "KUBEFERRY-AIRGAP"
RECENT = "kubeferry-airgap"  # xt_recent list of the destinations tried (/proc/net/xt_recent)
ON_LINK_ONLY = ("224.0.0.0/24", "255.255.255.255/32")
_COUNT = re.compile(r"^\s*(\d+)\s+\d+\s+REJECT\b", re.MULTILINE)


def rules(subnet: ipaddress.IPv4Network, internet_side: str) -> list[list[str]]:
    """The OUTPUT rules (appended in order) that send leaving packets to ``CHAIN``."""
    jump = ["-j", CHAIN]
    return [
        ["OUTPUT", "-o", "lo", "-j", "RETURN"],
        # Never routed, so they stay on the site's own link: link-local multicast (RFC 5771;
        # keepalived's VRRP adverts to 224.0.0.18 when an lb host has no unicast peer) and
        # the limited broadcast.
        *[["OUTPUT", "-d", on_link, "-j", "RETURN"] for on_link in ON_LINK_ONLY],
        ["OUTPUT", "!", "-d", str(subnet), *jump],
        # The internet side's address on the bridge: whatever opens a connection to it is
        # counted (a TCP SYN; any other protocol's packet not part of an exchange it began).
        # Replies to its SSH pass, and so do the late packets of an SSH connection already
        # gone: a FIN or RST the node sends after conntrack forgot or lost the connection is
        # INVALID (or NEW, picked up mid-stream) but never a SYN, and it opens nothing.
        ["OUTPUT", "-d", f"{internet_side}/32", "-p", "tcp", "--syn", *jump],
        ["OUTPUT", "-d", f"{internet_side}/32", "!", "-p", "tcp", "-m", "conntrack", "!",
         "--ctstate", "ESTABLISHED,RELATED", *jump],
    ]


def install(netns: str, subnet: ipaddress.IPv4Network, internet_side: str,
            iptables: str = "iptables") -> None:
    """Default route on-link and the counting rules, in a fresh lab namespace."""
    def run(argv: Sequence[str]) -> None:
        if argv[0] == "iptables":
            argv = [iptables, *argv[1:]]
        proc.run(network.in_netns(netns, argv))

    run(["ip", "route", "replace", "default", "dev", network.INNER_INTERFACE])
    run(["iptables", "-w", "5", "-N", CHAIN])
    # remember each destination tried (no verdict: on to the REJECT that counts it)
    run(["iptables", "-w", "5", "-A", CHAIN, "-m", "recent", "--name", RECENT, "--rdest", "--set"])
    run(["iptables", "-w", "5", "-A", CHAIN, "-j", "REJECT"])
    for rule in rules(subnet, internet_side):
        run(["iptables", "-w", "5", "-A", *rule])


def count(netns: str, iptables: str = "iptables") -> int:
    """Packets refused so far in ``netns`` (OperationError when its chain is missing)."""
    result = proc.run(network.in_netns(netns, [iptables, "-w", "5", "-L", CHAIN, "-v", "-x",
                                               "-n"]), check=False)
    match = _COUNT.search(result.stdout.decode(errors="replace"))
    if result.returncode != 0 or match is None:
        raise OperationError(f"no air-gap counter in {netns} (iptables chain {CHAIN} is gone)")
    return int(match.group(1))


def destinations(netns: str) -> list[str]:
    """The addresses packets from ``netns`` tried to reach (empty when none did)."""
    result = proc.run(network.in_netns(netns, ["cat", f"/proc/net/xt_recent/{RECENT}"]), check=False)
    return re.findall(r"src=(\S+)", result.stdout.decode(errors="replace"))


def summary(counts: dict[str, int], tried: dict[str, list[str]] | None = None) -> str:
    """The demo's last line: the sum, and which host tried (and where) when it is not zero."""
    total = sum(counts.values())
    noun = "packet" if total == 1 else "packets"
    line = f"air gap held: {total} {noun} tried to leave the site"
    hosts = [f"{name} {value}" + (f" to {' '.join((tried or {}).get(name, []))}"
                                  if (tried or {}).get(name) else "")
             for name, value in counts.items() if value]
    return f"{line} ({', '.join(hosts)})" if hosts else line
