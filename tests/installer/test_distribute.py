"""Phase ``distribute`` on the air-gap lab: verified, resumable, never sent twice."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kubeferry.bundle.reader import Bundle
from kubeferry.bundler.content import Member
from kubeferry.bundler.writer import write_bundle
from kubeferry.lab.inventory import lab_inventory, write_inventory
from kubeferry.lab.site import Site

pytestmark = [pytest.mark.real, pytest.mark.lab]
KUBEFERRY = [sys.executable, "-m", "kubeferry.cli"]
BIG = 12_000_000


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle with a package repository: one big file (to interrupt) and small ones."""
    work = tmp_path_factory.mktemp("bundle")
    members = []
    for name, size in (("big.deb", BIG), ("Packages", 2000), ("Release", 300)):
        source = work / name
        source.write_bytes(os.urandom(size))
        members.append(Member.from_file(f"packages/debian12/{name}", source))
    target = work / "kubeferry-k8s-1.25.0-debian12-amd64.tar"
    write_bundle(target, {"kubernetes": "1.25.0", "os": "debian12", "arch": "amd64",
                          "images": []}, members)
    return target


def install(bundle: Path, inventory: Path, *extra: str, run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*KUBEFERRY, "install", "--bundle", str(bundle), "--inventory",
                           str(inventory), "--only", "distribute", "--yes", "--run-dir",
                           str(run_dir), "--relay", "off", *extra],
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


def node_files(site: Site, node: str) -> dict[str, str]:
    out = site.node(node).ssh("cd /var/lib/kubeferry/bundle && find . -type f | sort"
                              " | xargs -r sha256sum", check=False).stdout
    return {line.split()[1][2:]: line.split()[0] for line in out.splitlines()}


def restart_sshd(site: Site, node) -> None:
    """Bring the node's sshd back from the admin host (inside the node's namespaces)."""
    subprocess.run(["nsenter", "-t", str(site.init_pid(node)), "-a", "systemctl", "restart", "ssh"],
                   check=True, timeout=60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        node.close()
        try:
            if node.ssh("true", check=False).exit_status == 0:
                return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.3)
    raise AssertionError(f"sshd on {node.name} did not come back")


@pytest.fixture
def clean_nodes(lab_site: Site):
    yield lab_site
    for node in lab_site.nodes:
        node.ssh("rm -rf /var/lib/kubeferry", check=False)
        lab_site.shape(node, rate=None)


def test_every_node_gets_verified_files_once(clean_nodes: Site, bundle: Path, tmp_path: Path) -> None:
    site = clean_nodes
    inventory = write_inventory(tmp_path / "cluster.yaml", lab_inventory(site))
    first = install(bundle, inventory, run_dir=tmp_path / "run1")
    assert first.returncode == 0, first.stdout + first.stderr
    expected = {m["path"]: m["sha256"] for m in Bundle.open(bundle).members}
    for node in site.nodes:
        assert node_files(site, node.name) == expected
        assert f"[distribute] {node.name}: changed (sent 3 files" in first.stdout
    again = install(bundle, inventory, run_dir=tmp_path / "run2")
    assert again.returncode == 0, again.stderr
    for node in site.nodes:
        assert f"[distribute] {node.name}: done" in again.stdout
    assert "cat >>" not in "".join(p.read_text() for p in (tmp_path / "run2").glob("*.log"))


def test_sshd_killed_mid_transfer_then_resumed(clean_nodes: Site, bundle: Path, tmp_path: Path) -> None:
    site = clean_nodes
    victim = site.node("node2")
    site.shape(victim, rate="20mbit")  # ~5 s for the big file: time to pull the plug
    inventory = write_inventory(tmp_path / "cluster.yaml", lab_inventory(site))

    def kill_sshd() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            size = victim.ssh("wc -c < /var/lib/kubeferry/bundle/packages/debian12/big.deb.part"
                              " 2>/dev/null || echo 0", check=False).stdout.strip()
            if size.isdigit() and int(size) > BIG // 10:
                break
            time.sleep(0.2)
        victim.ssh("nohup sh -c 'pkill -9 -x sshd' >/dev/null 2>&1 &", check=False)

    killer = threading.Thread(target=kill_sshd)
    killer.start()
    broken = install(bundle, inventory, run_dir=tmp_path / "run1")
    killer.join(timeout=90)
    victim.close()
    assert broken.returncode == 1
    assert "node2 in phase distribute" in broken.stderr and "node2.log" in broken.stderr
    assert "[distribute] node1: changed" in broken.stdout  # the others finished
    restart_sshd(site, victim)
    partial = int(victim.ssh("wc -c < /var/lib/kubeferry/bundle/packages/debian12/big.deb.part")
                  .stdout.strip())
    assert 0 < partial < BIG
    site.shape(victim, rate=None)
    resumed = install(bundle, inventory, run_dir=tmp_path / "run2")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    sent = int(resumed.stdout.split("[distribute] node2: changed (sent ")[1].split(" bytes")[0]
               .split(", ")[1])
    assert sent <= BIG - partial + 3000  # only the rest of the big file and the small ones
    assert node_files(site, "node2") == {m["path"]: m["sha256"] for m in Bundle.open(bundle).members}


def test_host_keys_are_verified(clean_nodes: Site, bundle: Path, tmp_path: Path) -> None:
    site = clean_nodes
    data = lab_inventory(site, roles={"node1": ["control-plane"]})
    lines = site.known_hosts_file.read_text().splitlines()
    node1, node2 = site.node("node1"), site.node("node2")
    # node1's address with node2's key: a man in the middle
    forged = [line for line in lines if line.startswith(node2.address + " ")][0]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(forged.replace(node2.address, node1.address, 1) + "\n")
    data["ssh"]["knownHosts"] = str(wrong)
    inventory = write_inventory(tmp_path / "cluster.yaml", data)
    refused = install(bundle, inventory, run_dir=tmp_path / "r1")
    assert refused.returncode == 1 and "host key does not match" in refused.stderr
    assert len([line for line in refused.stderr.splitlines() if line.startswith("kubeferry:")]) == 1
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    data["ssh"]["knownHosts"] = str(empty)
    write_inventory(inventory, data)
    unknown = install(bundle, inventory, run_dir=tmp_path / "r2")
    assert unknown.returncode == 1 and "--accept-new-host-keys" in unknown.stderr
    learned = install(bundle, inventory, "--accept-new-host-keys", run_dir=tmp_path / "r3")
    assert learned.returncode == 0, learned.stderr
    assert node1.address in empty.read_text()
    wrong_again = install(bundle, write_inventory(inventory, {**data, "ssh": {
        **data["ssh"], "knownHosts": str(wrong)}}), "--accept-new-host-keys", run_dir=tmp_path / "r4")
    assert wrong_again.returncode == 1 and "host key does not match" in wrong_again.stderr
