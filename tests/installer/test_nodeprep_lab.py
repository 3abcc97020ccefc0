"""Node preparation on the air-gap lab: preflight, distribute, os, packages, containerd and
images through ``kubeferry install`` on 3 real Debian 12 nodes (systemd, sshd, apt,
containerd, no route out), with a debian12 bundle built from Debian's archive and the lab's
stand-in Kubernetes packages. The site is this module's own: packages get installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from nodeprep_bundle import build_bundle

from kubeferry.bundle.reader import Bundle
from kubeferry.bundler.writer import write_bundle
from kubeferry.installer.roles import images_for
from kubeferry.lab.harbor import HarborStandIn
from kubeferry.lab.inventory import lab_inventory, write_inventory
from kubeferry.lab.site import Site

pytestmark = [pytest.mark.real, pytest.mark.lab]
KUBEFERRY = [sys.executable, "-m", "kubeferry.cli"]
NODE_PREP = "preflight,distribute,os,packages,containerd,images"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("debian12"))


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    for stale in Site.abandoned():
        Site.down_named(stale)
    name = f"np{os.getpid() % 100000}"[:8]
    try:
        made = Site.up(nodes=3, name=name, owner=os.getpid())
        yield made
    finally:
        Site.down_named(name)


@pytest.fixture(scope="module")
def inventory(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = lab_inventory(site, controlPlaneEndpoint="k8s-api.lab:6443")
    return write_inventory(tmp_path_factory.mktemp("inventory") / "cluster.yaml", data)


def install(bundle: Path, inventory: Path, run_dir: Path, only: str = NODE_PREP,
            *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*KUBEFERRY, "install", "--bundle", str(bundle), "--inventory", str(inventory),
                           "--only", only, "--yes", "--run-dir", str(run_dir), *extra],
                          capture_output=True, text=True, timeout=1200, stdin=subprocess.DEVNULL)


def sh(site: Site, node: str, command: str) -> str:
    return site.node(node).ssh(command, timeout=120).stdout


def forget_phases(site: Site) -> None:
    """Drop the completion markers, so the next run checks every phase again."""
    for node in site.nodes:
        node.ssh("rm -rf /var/lib/kubeferry/phases")


def commands_run(run_dir: Path) -> str:
    return "\n".join(line for log in sorted(run_dir.glob("*.log")) for line in log.read_text().splitlines()
                     if " $ " in line)


def test_install_prepares_every_node(site: Site, bundle: Path, inventory: Path, tmp_path: Path) -> None:
    result = install(bundle, inventory, tmp_path / "run")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "preflight: bundle debian12 amd64, Kubernetes 1.25.0" in out
    for node in site.nodes:
        assert any(line.startswith(node.name) and "debian 12" in line and line.endswith("ok")
                   for line in out.splitlines()), out
        for phase in ("os", "packages", "containerd", "images"):
            assert f"[{phase}] {node.name}: changed" in out, (phase, out)
    # three nodes: the relay carried the bundle, the nodes had nothing left to take directly
    assert "[distribute] admin-host: changed (relayed" in out, out
    assert all(f"[distribute] {node.name}: ok" in out for node in site.nodes), out
    meta = Bundle.open(bundle).metadata
    first = site.nodes[0]

    for node in site.nodes:
        # os: sysctl and modules now and at boot, /etc/hosts block
        assert sh(site, node.name, "cd /proc/sys/net && cat ipv4/ip_forward bridge/bridge-nf-call-iptables"
                  " bridge/bridge-nf-call-ip6tables").split() == ["1", "1", "1"]
        assert "net.ipv4.ip_forward = 1" in sh(site, node.name, "cat /etc/sysctl.d/kubeferry-k8s.conf")
        assert sh(site, node.name, "grep -v '^#' /etc/modules-load.d/kubeferry.conf").split() == [
            "br_netfilter", "overlay", "nf_conntrack"]
        hosts = sh(site, node.name, "cat /etc/hosts")
        assert f"{first.address} k8s-api.lab" in hosts
        assert all(f"{n.address} {n.name}" in hosts for n in site.nodes)
        # packages: exactly the bundled versions, from the bundle's repository alone
        rows = {row["name"]: row["version"] for row in meta["packages"]["packages"] if row["requested"]}
        installed = dict(line.split("\t") for line in sh(
            site, node.name, "dpkg-query -W -f='${Package}\\t${Version}\\n' " + " ".join(rows)).splitlines())
        assert installed == rows
        assert sh(site, node.name, "apt-mark showhold").split() == ["kubeadm", "kubectl", "kubelet"]
        assert sh(site, node.name, "cat /etc/apt/kubeferry.list").splitlines()[-1] == (
            "deb [trusted=yes] file:/var/lib/kubeferry/bundle/packages/debian12 ./")
        assert sh(site, node.name, "systemctl is-enabled kubelet").strip() == "enabled"
        # containerd: the config kubeadm needs, as containerd itself reads it
        dump = sh(site, node.name, "containerd config dump")
        assert 'sandbox_image = "registry.k8s.io/pause:3.8"' in dump
        assert "SystemdCgroup = true" in dump and 'config_path = "/etc/containerd/certs.d"' in dump
        assert 'bin_dir = "/opt/cni/bin"' in dump
        assert "runtime-endpoint: unix:///run/containerd/containerd.sock" in sh(site, node.name,
                                                                                 "cat /etc/crictl.yaml")
        # images: exactly the node's, with the bundle's digests
        held = {}
        for line in sh(site, node.name, "ctr -n k8s.io images ls").splitlines()[1:]:
            fields = line.split()
            if not fields[0].startswith("sha256:"):  # CRI's own id refs
                held[fields[0]] = fields[2]
        host = next(h for h in _hosts(site) if h.name == node.name)
        wanted = {image["name"]: image["digest"] for image in images_for(Bundle.open(bundle), host)}
        assert {name: held.get(name) for name in wanted} == wanted
        assert set(held) == set(wanted)
    assert "registry.k8s.io/kube-apiserver:v1.25.0" not in sh(site, "node2", "ctr -n k8s.io images ls -q")

    # chrony: node1 serves the site, the others follow it only
    assert "allow " + str(site.subnet) in sh(site, "node1", "cat /etc/chrony/chrony.conf")
    client = sh(site, "node2", "cat /etc/chrony/chrony.conf")
    assert f"server {first.address} iburst" in client and "pool" not in client
    deadline = time.monotonic() + 60
    while f"* {first.address}" not in sh(site, "node3", "chronyc -n sources"):
        assert time.monotonic() < deadline, sh(site, "node3", "chronyc -n sources")
        time.sleep(2)
    # apt read only the bundle's repository
    assert "apt-get -o Dir::Etc::sourcelist=/etc/apt/kubeferry.list -o Dir::Etc::sourceparts=-" in (
        commands_run(tmp_path / "run"))


def _hosts(site: Site):
    from kubeferry.installer.inventory import parse

    return parse(lab_inventory(site)).hosts


def test_rerun_changes_nothing(site: Site, bundle: Path, inventory: Path, tmp_path: Path) -> None:
    done = install(bundle, inventory, tmp_path / "markers")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(": done (finished in an earlier run)") == 15  # 5 phases x 3 nodes
    forget_phases(site)
    again = install(bundle, inventory, tmp_path / "again")
    assert again.returncode == 0, again.stdout + again.stderr
    for node in site.nodes:
        for phase in NODE_PREP.split(","):
            assert f"[{phase}] {node.name}: ok" in again.stdout, (phase, again.stdout)
    ran = commands_run(tmp_path / "again")
    for changing in ("apt-get", "ctr -n k8s.io images import", "systemctl restart", "mv -f", "modprobe br",
                     "cat >>", "sysctl -w"):
        assert changing not in ran, changing


def test_a_membership_change_reruns_the_phases_it_affects(site: Site, bundle: Path, inventory: Path,
                                                          tmp_path: Path) -> None:
    """Markers record what of the site a phase followed: with node3 gone from the inventory,
    os runs again on node1 and node2 (their /etc/hosts lose node3); with it back, again, while
    node3, finished with the three-node site, stays done. containerd follows no membership."""
    assert install(bundle, inventory, tmp_path / "three").returncode == 0
    data = lab_inventory(site, controlPlaneEndpoint="k8s-api.lab:6443")
    data["hosts"] = data["hosts"][:2]
    two = install(bundle, write_inventory(tmp_path / "two.yaml", data), tmp_path / "two")
    assert two.returncode == 0, two.stdout + two.stderr
    for node in ("node1", "node2"):
        assert f"[os] {node}: changed (write /etc/hosts)" in two.stdout, two.stdout
        assert f"[containerd] {node}: done" in two.stdout
        assert f"{site.node('node3').address} node3" not in sh(site, node, "cat /etc/hosts")
    back = install(bundle, inventory, tmp_path / "back")
    assert back.returncode == 0, back.stdout + back.stderr
    assert "[os] node1: changed (write /etc/hosts)" in back.stdout
    assert "[os] node3: done" in back.stdout and "[containerd] node1: done" in back.stdout
    assert f"{site.node('node3').address} node3" in sh(site, "node1", "cat /etc/hosts")


def main_pid(site: Site, node: str) -> str:
    return sh(site, node, "systemctl show -p MainPID --value containerd").strip()


def test_containerd_restarts_only_where_its_config_changed(site: Site, bundle: Path, inventory: Path,
                                                           tmp_path: Path) -> None:
    pids = {n.name: main_pid(site, n.name) for n in site.nodes}
    site.node("node2").ssh("echo '# edited by hand' >> /etc/containerd/config.toml")
    forget_phases(site)
    result = install(bundle, inventory, tmp_path / "run", "containerd")
    assert result.returncode == 0, result.stdout + result.stderr
    assert ("[containerd] node2: changed (write /etc/containerd/config.toml; restart containerd)"
            in result.stdout)
    assert "[containerd] node1: ok" in result.stdout and "[containerd] node3: ok" in result.stdout
    after = {n.name: main_pid(site, n.name) for n in site.nodes}
    assert after["node2"] != pids["node2"]
    assert (after["node1"], after["node3"]) == (pids["node1"], pids["node3"])


def test_swap_in_fstab_is_commented_out(site: Site, bundle: Path, inventory: Path, tmp_path: Path) -> None:
    site.node("node3").ssh("echo '/swap.img none swap sw 0 0' >> /etc/fstab")
    forget_phases(site)
    result = install(bundle, inventory, tmp_path / "run", "os")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[os] node3: changed (write /etc/fstab)" in result.stdout
    assert "#/swap.img none swap sw 0 0" in sh(site, "node3", "cat /etc/fstab")
    assert "[os] node1: ok" in result.stdout


def test_ipvs_on_this_kernel_fails_before_any_change(site: Site, bundle: Path, tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path / "ipvs.yaml", lab_inventory(site, proxyMode="ipvs"))
    before = sh(site, "node1", "cat /etc/modules-load.d/kubeferry.conf")
    forget_phases(site)
    result = install(bundle, inventory, tmp_path / "run", "os")
    assert result.returncode == 1
    kernel = sh(site, "node1", "uname -r").strip()
    assert (f"[os] node1: failed (node1: ip_vs, ip_vs_rr, ip_vs_wrr, ip_vs_sh: not available in kernel"
            f" {kernel} (modprobe: FATAL: Module ip_vs not found in directory /lib/modules/{kernel});"
            " use cluster.proxyMode: iptables, or a kernel with IPVS)") in result.stdout
    assert "Traceback" not in result.stderr
    assert sh(site, "node1", "cat /etc/modules-load.d/kubeferry.conf") == before


def test_preflight_refuses_a_bundle_for_another_os(site: Site, inventory: Path, tmp_path: Path) -> None:
    other = tmp_path / "kubeferry-k8s-1.25.0-ubuntu2204-amd64.tar"
    write_bundle(other, {"kubernetes": "1.25.0", "os": "ubuntu2204", "arch": "amd64", "images": []}, [])
    result = install(other, inventory, tmp_path / "run", "preflight")
    assert result.returncode == 1
    for node in site.nodes:
        assert (f"{node.name}: error: OS is debian 12, the bundle is for ubuntu2204: use a ubuntu2204"
                " bundle for this node") in result.stdout


def test_preflight_finds_cloned_product_uuid(site: Site, bundle: Path, inventory: Path,
                                            tmp_path: Path) -> None:
    uuid = site.nodes[0].product_uuid.lower()
    clone = site.node("node3")
    clone.ssh(f"echo {uuid} > /run/cloned-uuid"
              " && mount --bind /run/cloned-uuid /sys/class/dmi/id/product_uuid")
    try:
        result = install(bundle, inventory, tmp_path / "run", "preflight")
    finally:
        clone.ssh("umount /sys/class/dmi/id/product_uuid && rm -f /run/cloned-uuid")
    assert result.returncode == 1
    assert f"node1: error: duplicate product_uuid {uuid} (also on node3)" in result.stdout
    assert f"node3: error: duplicate product_uuid {uuid} (also on node1)" in result.stdout
    assert "node2: error" not in result.stdout
    assert "[preflight] node2: ok" in result.stdout


def test_preflight_refuses_busy_ports_unless_kubeadm_ran(site: Site, bundle: Path, inventory: Path,
                                                         tmp_path: Path) -> None:
    node1 = site.node("node1")
    node1.ssh("/usr/sbin/sshd -p 6443 -o PidFile=/run/kf-test-6443.pid")
    try:
        busy = install(bundle, inventory, tmp_path / "busy", "preflight")
        node1.ssh("mkdir -p /etc/kubernetes && touch /etc/kubernetes/kubelet.conf")
        ours = install(bundle, inventory, tmp_path / "ours", "preflight")
    finally:
        node1.ssh("kill $(cat /run/kf-test-6443.pid); rm -f /etc/kubernetes/kubelet.conf")
    assert busy.returncode == 1
    assert "node1: error: port 6443 in use: stop what listens there" in busy.stdout
    assert ours.returncode == 0, ours.stdout


def test_harbor_site_pulls_through_hosts_toml(site: Site, bundle: Path, tmp_path: Path) -> None:
    """With a Harbor (the lab's stand-in on .2, seeded by `kubeferry harbor seed`): hosts.toml
    and the CA on every node, sandbox_image named in Harbor, and containerd pulls it."""
    service = site.add_host("harbor", 2)
    harbor = HarborStandIn(tmp_path / "harbor", addr=service.address, port=443,
                           hostnames=("harbor.lab",)).start_on(service)
    try:
        seeded = subprocess.run([*KUBEFERRY, "harbor", "seed", "--bundle", str(bundle), "--harbor",
                                 f"https://{service.address}", "--ca-file", harbor.ca_file,
                                 "--password-stdin"], input=harbor.admin_password + "\n",
                                capture_output=True, text=True, timeout=600)
        assert seeded.returncode == 0, seeded.stdout + seeded.stderr
        registry = {"url": "https://harbor.lab", "project": "google_containers", "caFile": harbor.ca_file,
                    "address": service.address}
        inventory = write_inventory(tmp_path / "harbor.yaml", lab_inventory(site, registry=registry))
        forget_phases(site)
        result = install(bundle, inventory, tmp_path / "run", "os,containerd")
        assert result.returncode == 0, result.stdout + result.stderr
        for node in site.nodes:
            hosts_toml = sh(site, node.name, "cat /etc/containerd/certs.d/harbor.lab/hosts.toml")
            assert 'server = "https://harbor.lab"' in hosts_toml
            assert '[host."https://harbor.lab"]' in hosts_toml
            assert 'capabilities = ["pull", "resolve"]' in hosts_toml
            assert 'ca = "/etc/containerd/certs.d/harbor.lab/ca.crt"' in hosts_toml
            ca_on_node = sh(site, node.name, "cat /etc/containerd/certs.d/harbor.lab/ca.crt")
            assert ca_on_node == Path(harbor.ca_file).read_text()
            dump = sh(site, node.name, "containerd config dump")
            assert 'sandbox_image = "harbor.lab/google_containers/pause:3.8"' in dump
            assert "mirrors" not in sh(site, node.name, "grep -v '^ *#' /etc/containerd/config.toml")
            assert f"{service.address} harbor.lab" in sh(site, node.name, "cat /etc/hosts")
        pulled = site.node("node2").ssh("ctr -n k8s.io images pull --hosts-dir /etc/containerd/certs.d"
                                        " harbor.lab/google_containers/pause:3.8", check=False, timeout=120)
        assert pulled.ok, pulled.stdout + pulled.stderr
        site.node("node2").ssh("ctr -n k8s.io images rm harbor.lab/google_containers/pause:3.8")
    finally:
        harbor.stop()
    # back to `registry: none` for whatever runs next
    forget_phases(site)
    plain = write_inventory(tmp_path / "none.yaml",
                            lab_inventory(site, controlPlaneEndpoint="k8s-api.lab:6443"))
    assert install(bundle, plain, tmp_path / "back", "os,containerd").returncode == 0


def test_plan_reads_only(site: Site, bundle: Path, inventory: Path, tmp_path: Path) -> None:
    forget_phases(site)
    site.node("node2").ssh("echo '# edited' >> /etc/containerd/config.toml")
    result = install(bundle, inventory, tmp_path / "run", NODE_PREP, "--plan")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[containerd] node2: would write /etc/containerd/config.toml" in result.stdout
    assert "[containerd] node2: would restart containerd" in result.stdout
    as_json = install(bundle, inventory, tmp_path / "json", NODE_PREP, "--plan", "--json")
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)  # the preflight table went to stderr
    assert "preflight:" in as_json.stderr and document["bundle"]["kubernetes"] == "1.25.0"
    steps = {(r["phase"], r["host"]): r["steps"] for r in document["results"]}
    assert "restart containerd" in steps[("containerd", "node2")]
    assert "# edited" in sh(site, "node2", "cat /etc/containerd/config.toml")
