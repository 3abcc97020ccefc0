"""Benchmark: `install --only distribute` against scp, to 1, 3 and 5 lab nodes at 100 Mbit/s.

`--shared-uplink`: the admin host's own link is the bottleneck, as at a real site (one
tbf of 100 Mbit/s on the lab bridge's egress, the path every admin-to-node packet takes;
node-to-node frames are bridged past it); node links optionally shaped too
(`--node-rate`). kubeferry with the relay (`--relay on`) and without (`--relay off`)
against parallel scp, for 1/4/8 nodes; the per-hop cost is fitted from the relay's times
and projected to 50 and 200 nodes.

A ~500 MB bundle (package-repository members of random bytes, as compressed packages
are) goes to lab nodes whose links are shaped to 100 Mbit/s (tc tbf, both directions).
In the same run, per node count:
- scp, one node after another (the runbooks' way: `scp bundle node:`, node by node);
- scp to every node at once from the admin host (parallel processes);
- kubeferry distribute (parallel over SSH, verified by sha256 on each node).
The physical limit is one node's transfer time: size / 100 Mbit/s.
Run as root: `.venv/bin/python bench/distribute.py [--size-mb 500] [--nodes 1,3,5]`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kubeferry.bundler.content import Member
from kubeferry.bundler.writer import write_bundle
from kubeferry.lab.inventory import lab_inventory, write_inventory
from kubeferry.lab.site import Site

RATE_MBIT = 100


def make_bundle(work: Path, size_mb: int) -> Path:
    members = []
    chunk = 10_000_000
    for index in range(max(1, size_mb * 1_000_000 // chunk)):
        source = work / f"pkg{index}.rpm"
        source.write_bytes(os.urandom(chunk))
        members.append(Member.from_file(f"packages/el8/Packages/pkg{index}.rpm", source))
    target = work / "kubeferry-k8s-1.25.0-el8-amd64.tar"
    write_bundle(target, {"kubernetes": "1.25.0", "os": "el8", "arch": "amd64", "images": []},
                 members)
    for member in members:
        member.source.unlink()
    return target


def scp_command(site: Site, node, bundle: Path) -> list[str]:
    return ["scp", "-q", "-i", str(site.ssh_key), "-o", f"UserKnownHostsFile={site.known_hosts_file}",
            "-o", "StrictHostKeyChecking=yes", str(bundle), f"root@{node.address}:/var/tmp/bundle.tar"]


def timed(action, *args) -> float:
    started = time.monotonic()
    action(*args)
    return time.monotonic() - started


def scp_serial(site: Site, nodes: list, bundle: Path) -> None:
    for node in nodes:
        subprocess.run(scp_command(site, node, bundle), check=True)


def scp_parallel(site: Site, nodes: list, bundle: Path) -> None:
    running = [subprocess.Popen(scp_command(site, node, bundle)) for node in nodes]
    if not all(process.wait() == 0 for process in running):
        raise SystemExit("scp failed")


def distribute(command: list[str]) -> None:
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def clean(site: Site) -> None:
    for node in site.nodes:
        node.ssh("rm -rf /var/lib/kubeferry /var/tmp/bundle.tar", check=False)


def kubeferry_distribute(site: Site, work: Path, bundle: Path, nodes: list, *extra: str) -> float:
    data = lab_inventory(site, roles={n.name: ["worker"] if i else ["control-plane"]
                                      for i, n in enumerate(nodes)})
    inventory = write_inventory(work / "cluster.yaml", data)
    command = [sys.executable, "-m", "kubeferry.cli", "install", "--bundle", str(bundle),
               "--inventory", str(inventory), "--only", "distribute", "--yes",
               "--run-dir", str(work / f"run-{len(nodes)}-{'-'.join(extra) or 'default'}"), *extra]
    return timed(distribute, command)


def shared_uplink(site: Site, work: Path, bundle: Path, counts: list[int], node_rate: str | None) -> None:
    """The admin host's link shaped once for all nodes: what the relay is for."""
    size = bundle.stat().st_size
    limit = size * 8 / (RATE_MBIT * 1e6)
    shape = ["tc", "qdisc", "replace", "dev", site.bridge, "root", "tbf", "rate", f"{RATE_MBIT}mbit",
             "burst", "256kb", "latency", "50ms"]
    subprocess.run(shape, check=True)
    try:
        for node in site.nodes:
            site.shape(node, rate=node_rate)
        print(f"bundle {size / 1e6:.0f} MB; admin uplink {RATE_MBIT} Mbit/s shared by all nodes"
              f" (node links {node_rate or 'unshaped'}): one node's limit {limit:.1f} s")
        print(f"{'nodes':>5} {'scp parallel':>13} {'direct':>8} {'relay':>8} {'relay/1 node':>13}"
              f" {'vs scp':>7}")
        relayed: dict[int, float] = {}
        for count in counts:
            nodes = site.nodes[:count]
            clean(site)
            par = timed(scp_parallel, site, nodes, bundle)
            clean(site)
            direct = kubeferry_distribute(site, work, bundle, nodes, "--relay", "off")
            clean(site)
            relayed[count] = kubeferry_distribute(site, work, bundle, nodes, "--relay", "on")
            base = relayed.get(1, relayed[count])
            print(f"{count:>5} {par:>12.1f}s {direct:>7.1f}s {relayed[count]:>7.1f}s"
                  f" {relayed[count] / base:>12.2f}x {par / relayed[count]:>6.2f}x")
        if len(relayed) >= 2:
            # the per-hop cost from the two largest chains (a 1-node "chain" has no hop)
            low, high = sorted(relayed)[-2:]
            per_hop = (relayed[high] - relayed[low]) / (high - low)
            for projected in (50, 200):
                estimate = relayed[high] + per_hop * (projected - high)
                print(f"projected {projected} nodes: {estimate:.1f} s ({per_hop:.2f} s per hop from"
                      f" {low} to {high} nodes; parallel scp: ~{limit * projected:.0f} s)")
        clean(site)
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", site.bridge, "root"], check=False)
        for node in site.nodes:
            site.shape(node, rate=None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--nodes", default="1,3,5")
    parser.add_argument("--shared-uplink", action="store_true",
                        help="shape the admin host's link, not the nodes' (default nodes 1,4,8)")
    parser.add_argument("--node-rate", default=None, help="with --shared-uplink: shape node links too")
    options = parser.parse_args()
    if options.shared_uplink and options.nodes == "1,3,5":
        options.nodes = "1,4,8"
    counts = [int(n) for n in options.nodes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="kubeferry-bench-dist-"))
    site = Site.up(nodes=max(counts), name="bench")
    try:
        bundle = make_bundle(work, options.size_mb)
        if options.shared_uplink:
            shared_uplink(site, work, bundle, counts, options.node_rate)
            return
        size = bundle.stat().st_size
        limit = size * 8 / (RATE_MBIT * 1e6)
        print(f"bundle {size / 1e6:.0f} MB, links {RATE_MBIT} Mbit/s: physical limit {limit:.1f} s per node")
        for node in site.nodes:
            site.shape(node, rate=f"{RATE_MBIT}mbit")
        print(f"{'nodes':>5} {'scp serial':>11} {'scp parallel':>13} {'kubeferry':>10} "
              f"{'vs serial':>10} {'vs parallel':>12} {'vs limit':>9}")
        for count in counts:
            nodes = site.nodes[:count]
            clean(site)
            serial = timed(scp_serial, site, nodes, bundle)
            clean(site)
            par = timed(scp_parallel, site, nodes, bundle)
            clean(site)
            ours = kubeferry_distribute(site, work, bundle, nodes, "--relay", "off")
            print(f"{count:>5} {serial:>10.1f}s {par:>12.1f}s {ours:>9.1f}s "
                  f"{serial / ours:>9.2f}x {par / ours:>11.2f}x {ours / limit:>8.2f}x")
        clean(site)
    finally:
        site.down()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
