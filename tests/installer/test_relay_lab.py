"""The relay of ``distribute`` on the lab: each byte leaves the admin host once, every node
still checks every file, a node that falls out is fed directly, and nothing of the relay
outlives the run."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from kubeferry.bundle.reader import Bundle
from kubeferry.bundler.content import Member
from kubeferry.bundler.writer import write_bundle
from kubeferry.lab import scenario
from kubeferry.lab.inventory import lab_inventory, write_inventory
from kubeferry.lab.site import Site

pytestmark = [pytest.mark.real, pytest.mark.lab]
KUBEFERRY = [sys.executable, "-m", "kubeferry.cli"]
BIG = 16_000_000
NODES = 5


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    made = scenario.site_up(f"r{os.getpid() % 100000}", NODES)
    try:
        yield made
    finally:
        made.down()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("relay-bundle")
    members = []
    for name, size in (("big.deb", BIG), ("Packages", 3000), ("Release", 400)):
        source = work / name
        source.write_bytes(os.urandom(size))
        members.append(Member.from_file(f"packages/debian12/{name}", source))
    target = work / "kubeferry-k8s-1.25.0-debian12-amd64.tar"
    write_bundle(target, {"kubernetes": "1.25.0", "os": "debian12", "arch": "amd64", "images": []},
                 members)
    return target


@pytest.fixture
def clean(site: Site) -> Iterator[Site]:
    yield site
    for node in site.nodes:  # a test that failed half-way may have left sshd stopped
        subprocess.run(["nsenter", "-t", str(site.init_pid(node)), "-a", "systemctl", "start", "ssh"],
                       check=False, timeout=60)
        node.close()
    for node in site.nodes:
        unblock = "".join(f"iptables -D INPUT -p tcp --dport 22 -s {peer.address} -m comment"
                          " --comment relay-test -j REJECT 2>/dev/null; " for peer in site.nodes)
        node.ssh(f"rm -rf /var/lib/kubeferry; {unblock}true", check=False)
        site.shape(node, rate=None)


def install(bundle: Path, inventory: Path, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*KUBEFERRY, "install", "--bundle", str(bundle), "--inventory", str(inventory),
                           "--only", "distribute", "--yes", "--run-dir", str(run_dir), *extra],
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)


def files(site: Site, node: str) -> dict[str, str]:
    out = site.node(node).ssh("cd /var/lib/kubeferry/bundle 2>/dev/null && find . -type f | sort"
                              " | xargs -r sha256sum", check=False).stdout
    return {line.split()[1][2:]: line.split()[0] for line in out.splitlines()}


def assert_nothing_left(site: Site) -> None:
    for node in site.nodes:
        left = node.ssh("grep -c kubeferry-relay /root/.ssh/authorized_keys; ls /var/lib/kubeferry/relay"
                        " 2>/dev/null; pgrep -f 'relay/ho[p].sh'; pgrep -x tee", check=False).stdout.split()
        assert left == ["0"], (node.name, left)


def test_five_nodes_get_each_byte_once_from_the_admin_host(clean: Site, bundle: Path, tmp_path: Path) -> None:
    site = clean
    inventory = write_inventory(tmp_path / "cluster.yaml", lab_inventory(site))
    result = install(bundle, inventory, tmp_path / "run")
    assert result.returncode == 0, result.stdout + result.stderr
    chain = " -> ".join(["admin"] + [f"node{i}" for i in range(1, NODES + 1)])
    assert "relayed" in result.stdout, result.stdout
    line = next(line for line in result.stdout.splitlines() if "relayed" in line)
    sent = int(line.split("relayed ")[1].split(" bytes")[0])
    assert BIG + 3400 < sent < BIG + 3400 + 1000 and chain in line  # once, not five times
    expected = {m["path"]: m["sha256"] for m in Bundle.open(bundle).members}
    for node in site.nodes:
        assert files(site, node.name) == expected
        assert f"[distribute] {node.name}: ok" in result.stdout  # nothing left to send directly
    assert_nothing_left(site)
    again = install(bundle, inventory, tmp_path / "run2")
    assert again.returncode == 0 and "relayed" not in again.stdout, again.stdout


def test_a_node_closed_to_its_peers_on_ssh_falls_back_to_direct(clean: Site, bundle: Path,
                                                                tmp_path: Path) -> None:
    site = clean
    node3 = site.node("node3")
    for peer in site.nodes:
        if peer.name != "node3":
            node3.ssh(f"iptables -I INPUT -p tcp --dport 22 -s {peer.address} -m comment"
                      " --comment relay-test -j REJECT")
    inventory = write_inventory(tmp_path / "cluster.yaml", lab_inventory(site))
    result = install(bundle, inventory, tmp_path / "run")
    assert result.returncode == 0, result.stdout + result.stderr
    notice = [line for line in result.stdout.splitlines() if "relay off" in line]
    assert len(notice) == 1 and "node2 cannot pass it on to node3" in notice[0], result.stdout
    expected = {m["path"]: m["sha256"] for m in Bundle.open(bundle).members}
    for node in site.nodes:
        assert files(site, node.name) == expected
        assert f"[distribute] {node.name}: changed (sent 3 files" in result.stdout
    assert_nothing_left(site)


def test_a_middle_node_killed_mid_transfer(clean: Site, bundle: Path, tmp_path: Path) -> None:
    """node3's sshd dies while the big file passes through it: node1 and node2 finish from the
    chain, node4 and node5 directly; a re-run once node3 is back completes it."""
    site = clean
    victim = site.node("node3")
    site.shape(victim, rate="20mbit")  # ~7 s for the big file: time to pull the plug
    inventory = write_inventory(tmp_path / "cluster.yaml", lab_inventory(site))

    def kill_sshd() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            size = victim.ssh("wc -c < /var/lib/kubeferry/bundle/packages/debian12/big.deb.relay"
                              " 2>/dev/null || echo 0", check=False).stdout.strip()
            if size.isdigit() and int(size) > BIG // 8:
                break
            time.sleep(0.2)
        # down for good (systemd would restart a killed sshd): the node is out until fixed
        victim.ssh("nohup sh -c 'systemctl stop ssh.socket ssh.service; pkill -9 -x sshd'"
                   " >/dev/null 2>&1 &", check=False)

    killer = threading.Thread(target=kill_sshd)
    killer.start()
    broken = install(bundle, inventory, tmp_path / "run1")
    killer.join(timeout=150)
    victim.close()
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "relay broken" in broken.stdout and "node3 in phase distribute" in broken.stderr
    expected = {m["path"]: m["sha256"] for m in Bundle.open(bundle).members}
    for name in ("node1", "node2", "node4", "node5"):
        assert files(site, name) == expected, name
    subprocess.run(["nsenter", "-t", str(site.init_pid(victim)), "-a", "systemctl", "start", "ssh"],
                   check=True, timeout=60)
    site.shape(victim, rate=None)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        victim.close()
        try:
            if victim.ssh("true", check=False).exit_status == 0:
                break
        except Exception:  # noqa: BLE001 - sshd not up yet
            time.sleep(0.5)
    resumed = install(bundle, inventory, tmp_path / "run2")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert files(site, "node3") == expected
    assert_nothing_left(site)


def test_the_relay_through_a_sudo_login(clean: Site, bundle: Path, tmp_path: Path) -> None:
    """Logged in as the non-root sudo user: its own authorized_keys, the hop under sudo -n."""
    site = clean
    data = lab_inventory(site)
    data["ssh"].update({"user": site.sudo_user, "sudo": True})
    inventory = write_inventory(tmp_path / "cluster.yaml", data)
    result = install(bundle, inventory, tmp_path / "run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "relayed" in result.stdout, result.stdout
    expected = {m["path"]: m["sha256"] for m in Bundle.open(bundle).members}
    for node in site.nodes:
        assert files(site, node.name) == expected
        left = node.ssh(f"grep -c kubeferry-relay ~{site.sudo_user}/.ssh/authorized_keys",
                        check=False).stdout.split()
        assert left == ["0"], (node.name, left)
    assert_nothing_left(site)
