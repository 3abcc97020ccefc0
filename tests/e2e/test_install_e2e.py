"""The main job end to end on the air-gap lab: a bundle built against the stand-in internet,
installed on real nodes with the Harbor stand-in and the kubeadm double by the bundle's own
`kubeferry.pyz`, run with a stock python3 on the site's air-gapped admin host; then the same
install again, which must change and send nothing. No lab host may try to send a packet out
of the site meanwhile (the air-gap counter stays at 0)."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

import pytest
import yaml

from kubeferry.bundle.reader import Bundle
from kubeferry.lab import node as node_module
from kubeferry.lab import scenario, upstream_service
from kubeferry.lab.double_state import ClusterRecord
from kubeferry.lab.inventory import write_inventory
from kubeferry.lab.kubectl_release import kubectl_binary
from kubeferry.lab.site import Site
from kubeferry.lab.upstream_packages import reference_dir

pytestmark = [pytest.mark.real, pytest.mark.lab]
CALICO = reference_dir() / "calico-v3.24.5.yaml"
# What a worker runs: kube-proxy, the sandbox, coredns, calico, and verify's DNS pod.
WORKER_NEEDS = ("kube-proxy", "pause", "coredns", "calico/", "library/busybox")


@contextmanager
def _site(prefix: str, nodes: int, os_name: str = "debian12") -> Iterator[Site]:
    """A site of its own for one test, always taken down."""
    site = scenario.site_up(f"{prefix}{os.getpid() % 10000}", nodes, os_name=os_name)
    try:
        yield site
    finally:
        site.down()


def _containerd_images(node) -> set[str]:
    return set(node.ssh("ctr -n k8s.io images ls -q").stdout.split())


def _check_install(sc: scenario.Scenario, control_planes: list[str], workers: list[str],
                   install: Callable[[], subprocess.CompletedProcess[str]] | None = None) -> None:
    """``install``: how the first install runs (a fault injected meanwhile), else plainly."""
    first = (install or sc.install)()
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr
    _check_air_gap_held(sc)
    bundle = Bundle.open(sc.bundle)
    kubernetes_nodes = [sc.site.node(name) for name in control_planes + workers]
    for node in kubernetes_nodes:
        held = _containerd_images(node)
        names = [image["name"] for image in bundle.images]
        if node.name in workers:
            names = [name for name in names if any(part in name for part in WORKER_NEEDS)]
        assert set(names) <= held, (node.name, set(names) - held)
    if sc.harbor is not None:
        _check_pulls_through_harbor(sc, kubernetes_nodes, workers[0])
    else:
        assert "images imported with ctr (registry: none)" in first.stdout
    record = ClusterRecord(sc.site.cluster_state)
    order = record.join_order()
    assert order[0] == (control_planes[0], "control-plane")
    roles = [role for _, role in order]
    assert roles == ["control-plane"] * len(control_planes) + ["worker"] * len(workers)
    assert "verify" in first.stdout and "failed" not in first.stdout
    assert "DNS resolves kubernetes.default" in first.stdout  # busybox came in the bundle
    logs = "".join(p.read_text() for p in sc.run_path("run").glob("*.log"))
    assert logs, f"no run logs in {sc.run_path('run')}"
    secrets = [t.get("token", "") for t in record.tokens()]
    key = record.certificate_key()
    secrets += [key["key"]] if key else []
    assert secrets and all(secret and secret not in logs for secret in secrets)
    if sc.harbor is not None:
        assert sc.harbor.admin_password not in logs + first.stdout + first.stderr

    _check_real_kubectl(sc, control_planes + workers, sc.work / "kubectl")

    again = sc.install(run_dir="run2")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr
    assert ": changed" not in again.stdout
    rerun_logs = "".join(p.read_text() for p in sc.run_path("run2").glob("*.log"))
    assert "cat >>" not in rerun_logs  # nothing re-sent
    assert "kubeadm init" not in rerun_logs and "kubeadm join" not in rerun_logs
    _check_air_gap_held(sc)


def _check_real_kubectl(sc: scenario.Scenario, names: list[str], tmp: Path) -> None:
    """The admin kubeconfig install wrote, in real kubectl 1.25 and 1.26 on this machine (the
    lab's .1): through controlPlaneEndpoint (the VIP and haproxy in HA), TLS verified, to the
    API server stand-ins the control planes' kubelets run, state in their real etcd."""
    inventory = PurePosixPath(sc.admin_inventory)
    config = sc.admin.path(str(inventory.with_name(f"{inventory.stem}-admin.conf")))
    tmp.mkdir(parents=True, exist_ok=True)
    calico = tmp / "calico.yaml"
    calico.write_text(CALICO.read_text())
    for minor in ("1.25", "1.26"):
        kubectl = functools.partial(_kubectl, minor, config, tmp / f"cache-{minor}")
        # each kubelet reports its node's status on its own beat (as kubelets do every 10 s)
        deadline = time.monotonic() + 60
        while True:
            nodes = json.loads(kubectl("get", "nodes", "-o", "json").stdout)["items"]
            ready = {n["metadata"]["name"]: [c["status"] for c in n["status"]["conditions"]
                                             if c["type"] == "Ready"] for n in nodes}
            if ready == {name: ["True"] for name in names} or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert ready == {name: ["True"] for name in names}
        pods = json.loads(kubectl("get", "pods", "-A", "-o", "json").stdout)["items"]
        running = {p["metadata"]["name"] for p in pods if p["status"]["phase"] == "Running"}
        assert {f"kube-apiserver-{name}" for name in names if name in _control_planes(sc)} <= running
        assert len(running) == len(pods)
        assert kubectl("get", "crd").returncode == 0
        dry = kubectl("apply", "--dry-run=server", "-f", str(calico))
        assert dry.returncode == 0, dry.stderr
        # the cni phase applied calico (pool = podSubnet, site images) through the API: the
        # upstream manifest (no pool set) would change it
        assert "daemonset.apps/calico-node configured (server dry run)" in dry.stdout
        stored = json.loads(kubectl("get", "daemonset", "calico-node", "-n", "kube-system",
                                    "-o", "json").stdout)
        env = {e["name"]: e.get("value") for e in stored["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env.get("CALICO_IPV4POOL_CIDR") == "10.244.0.0/16", env


def _kubectl(minor: str, config: Path, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(kubectl_binary(minor)), "--kubeconfig", str(config), "--cache-dir", str(cache), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _control_planes(sc: scenario.Scenario) -> set[str]:
    order = ClusterRecord(sc.site.cluster_state).join_order()
    return {name for name, role in order if role == "control-plane"}


def _check_air_gap_held(sc: scenario.Scenario) -> None:
    """Not one packet from any lab host (nodes, Harbor, the admin host) tried to leave."""
    counts = sc.site.airgap_counts()
    assert "admin" in counts and all(node.name in counts for node in sc.site.nodes), counts
    assert sum(counts.values()) == 0, (counts, sc.site.airgap_destinations())


def _check_pulls_through_harbor(sc: scenario.Scenario, nodes: list, worker_name: str) -> None:
    """Every node's hosts.toml points at Harbor, and containerd pulls through it (as kubelet
    would for a new pod)."""
    assert sc.harbor is not None
    harbor = sc.harbor.host
    for node in nodes:
        hosts_toml = node.ssh(f"cat /etc/containerd/certs.d/{harbor}/hosts.toml").stdout
        assert f"https://{harbor}" in hosts_toml
    pulled = sc.site.node(worker_name).ssh("ctr -n k8s.io images pull --hosts-dir /etc/containerd/certs.d"
                                           f" {harbor}/google_containers/pause:3.8", timeout=300)
    assert pulled.ok


def test_one_control_plane_two_workers(tmp_path: Path) -> None:
    with _site("e", 3) as site:
        sc = scenario.prepare(site, tmp_path)
        _check_install(sc, ["node1"], ["node2", "node3"])


def _vip_holders(site: Site, names: list[str]) -> list[str]:
    return [name for name in names if site.vip in site.node(name).ssh("ip -4 -o addr show").stdout]


def _install_losing_the_vip_holder(sc: scenario.Scenario, lb_hosts: list[str],
                                   moved: list[str]) -> subprocess.CompletedProcess[str]:
    """The install, with the VIP holder's keepalived stopped as soon as the first join starts
    (the VIP moves to another lb host). kubeferry either recovers (the joins reach the API
    through the VIP on its new holder) or fails in one line naming the host, and a re-run
    completes. The new holder's name is appended to ``moved``; keepalived is started again
    (as an operator would), and keeps the VIP where it is (nopreempt)."""
    result: dict[str, subprocess.CompletedProcess[str]] = {}
    installing = threading.Thread(target=lambda: result.update(first=sc.install()), daemon=True)
    installing.start()
    joining = sc.run_path("run") / f"{lb_hosts[1]}.log"
    deadline = time.monotonic() + scenario.INSTALL_TIMEOUT
    while installing.is_alive() and time.monotonic() < deadline:
        if joining.exists() and "kubeadm join" in joining.read_text():
            break
        time.sleep(0.2)
    assert installing.is_alive(), result["first"].stdout[-3000:] + result["first"].stderr
    [holder] = _vip_holders(sc.site, lb_hosts)
    sc.site.node(holder).ssh("systemctl stop keepalived")
    joined = [name for name, _ in ClusterRecord(sc.site.cluster_state).join_order()]
    assert not set(joined) & set(lb_hosts[2:]), joined  # the later joins all come after
    deadline = time.monotonic() + 30
    while (holders := _vip_holders(sc.site, lb_hosts)) in ([], [holder]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(holders) == 1 and holders != [holder], (holder, holders)
    moved.extend(holders)
    installing.join(timeout=scenario.INSTALL_TIMEOUT)
    first = result["first"]
    print(f"VIP holder {holder} lost as {lb_hosts[1]} began its join (joined then: {joined});"
          f" the VIP moved to {holders[0]}; the install exited {first.returncode}: {first.stderr.strip()}")
    if first.returncode != 0:  # no recovery: one line naming a host, and a re-run completes
        errors = first.stderr.strip().splitlines()
        assert first.returncode == 1 and len(errors) == 1, first.stdout[-3000:] + first.stderr
        assert "Traceback" not in first.stderr and any(name in errors[0] for name in lb_hosts), errors
        first = sc.install(run_dir="run-again")  # starts keepalived again
    else:
        sc.site.node(holder).ssh("systemctl start keepalived")
    time.sleep(3)  # a few VRRP adverts: the old holder, back, does not take the VIP over
    assert _vip_holders(sc.site, lb_hosts) == holders
    return first


def test_ha_three_control_planes_vip_one_worker(tmp_path: Path) -> None:
    """HA, and the VIP holder's keepalived stopped once the joins started (the rest of the
    install, kubectl through the endpoint and the no-change re-run go through the new holder);
    then one API server down."""
    with _site("h", 4) as site:
        sc = scenario.prepare(site, tmp_path, ha=True)
        lb_hosts = ["node1", "node2", "node3"]
        moved: list[str] = []
        _check_install(sc, lb_hosts, ["node4"],
                       install=lambda: _install_losing_the_vip_holder(sc, lb_hosts, moved))
        assert _vip_holders(site, lb_hosts) == moved  # kubectl went through the new holder
        # one API server down: the kubelet double restarts it; meanwhile the VIP still answers
        pid = site.node("node1").ssh("pgrep -f -o kubelet/apiserver_double.py").stdout.split()[0]
        site.node("node1").ssh(f"kill {pid}")
        _check_real_kubectl(sc, ["node1", "node2", "node3", "node4"], sc.work / "kubectl-one-down")


def test_registry_none_images_only_by_ctr_import(tmp_path: Path) -> None:
    """No Harbor: kubeadm, kubelet and calico find every image imported on the node. The
    bundle crosses as parts of an odd size (bundle split), read in place on the admin host."""
    with _site("n", 2) as site:
        sc = scenario.prepare(site, tmp_path, harbor=False, split="7777777")
        assert sc.admin_bundle.endswith(".tar.001") and sc.split
        _check_install(sc, ["node1"], ["node2"])
        # with nothing to pull from, an image that was not imported never starts
        pod = ('{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},'
               ' "spec": {"containers": [{"name": "web", "image": "docker.io/library/nginx:1.25"}]}}')
        kubectl = "kubectl --kubeconfig /etc/kubernetes/admin.conf"
        created = site.node("node1").ssh(f"echo '{pod}' | {kubectl} apply -f -")
        assert "pod/web created" in created.stdout  # the API server admits it, as a real one does

        def reason() -> str:
            web = json.loads(site.node("node1").ssh(f"{kubectl} get pod web -o json").stdout)
            statuses = (web.get("status") or {}).get("containerStatuses") or [{}]
            return str(((statuses[0].get("state") or {}).get("waiting") or {}).get("reason"))

        deadline = time.monotonic() + 90
        while reason() != "ErrImagePull" and time.monotonic() < deadline:
            time.sleep(2)
        assert reason() == "ErrImagePull"


def test_a_separate_lb_host_holds_the_vip(tmp_path: Path) -> None:
    """An `lb` host (haproxy + keepalived, no Kubernetes) in front of the control plane."""
    with _site("l", 3) as site:
        sc = scenario.prepare(site, tmp_path, lb_host=True)
        _check_install(sc, ["node2"], ["node3"])
        lb = site.node("node1")
        assert site.vip in lb.ssh("ip -4 -o addr show").stdout
        assert lb.ssh("systemctl is-active haproxy keepalived").stdout.split() == ["active", "active"]
        assert lb.ssh("test -e /etc/kubernetes/kubelet.conf", check=False).exit_status == 1
        assert "kubelet" not in lb.ssh("dpkg-query -W -f '${Package}\\n'").stdout.split()


def test_el8_ha_three_control_planes_vip_one_worker(tmp_path: Path) -> None:
    """Rocky 8 nodes (real rpm, dnf, firewalld; SELinux configured enforcing) and a bundle
    built against the EL stand-in upstream: the EL path of every phase, for real. The nodes
    keep Rocky's own repositories enabled (their mirrors unreachable, as at a site with a
    broken mirror): the install never reads them (the air-gap counter stays at 0)."""
    with _site("r", 4, os_name="el8") as site:
        for node in site.nodes:
            enabled = node.ssh("cat /etc/yum.repos.d/Rocky-BaseOS.repo /etc/yum.repos.d/Rocky-AppStream.repo")
            assert enabled.stdout.split().count("enabled=1") == 2
        sc = scenario.prepare(site, tmp_path, ha=True)
        assert Bundle.open(sc.bundle).metadata["os"] == "el8"
        _check_install(sc, ["node1", "node2", "node3"], ["node4"])
        for node in site.nodes:
            assert node.ssh("systemctl is-active firewalld", check=False).stdout.strip() == "inactive"
            assert node.ssh("systemctl is-enabled firewalld", check=False).stdout.strip() == "disabled"
            assert "SELINUX=permissive" in node.ssh("cat /etc/selinux/config").stdout.split()
            repo = node.ssh("cat /etc/yum.repos.d/kubeferry.repo").stdout
            assert "gpgcheck=1" in repo.split()
            installed = node.ssh("rpm -q kubeadm kubelet kubectl containerd.io conntrack-tools").stdout
            assert installed.split() == ["kubeadm-1.25.0-0.x86_64", "kubelet-1.25.0-0.x86_64",
                                         "kubectl-1.25.0-0.x86_64", "containerd.io-1.6.22-3.1.el8.x86_64",
                                         "conntrack-tools-1.4.4-11.el8.x86_64"]
            # installed with gpgcheck: signed packages, and the vendors' keys rpm imported
            assert "Key ID" in node.ssh("rpm -q --qf '%{RSAHEADER:pgpsig}' kubeadm").stdout
            assert len(node.ssh("rpm -q gpg-pubkey").stdout.split()) == 3  # Rocky, Docker, k8s
            locks = node.ssh("dnf -q --disablerepo='*' versionlock list").stdout.split()
            assert {"kubeadm-0:1.25.0-0.*", "kubelet-0:1.25.0-0.*", "kubectl-0:1.25.0-0.*"} <= set(locks)
        for node in site.nodes[:3]:
            assert node.ssh("systemctl is-active haproxy keepalived").stdout.split() == ["active"] * 2


# A site's own package mirror that accepts connections and never answers (the worst kind of
# broken mirror: a client that reads it hangs): each connection is one line in its log.
_HANGING_MIRROR = """
import socket, sys
server = socket.create_server((sys.argv[1], 80))
held = []
while True:
    connection, peer = server.accept()
    held.append(connection)
    with open(sys.argv[2], "a") as log:
        log.write(f"{peer[0]}\\n")
"""
EL7_KERNEL_ML = "4.19.12-1.el7.elrepo.x86_64"


def _boot_id(node) -> str:
    return node.ssh("cat /proc/sys/kernel/random/boot_id").stdout.strip()


def _reboot_and_wait(node, timeout: float = 120.0) -> None:
    """Reboot a lab node for real and wait for SSH with a new boot id."""
    old = _boot_id(node)
    node.ssh("nohup sh -c 'sleep 1; systemctl reboot' >/dev/null 2>&1 &")
    node.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(2)
        try:
            if _boot_id(node) not in ("", old):
                return
        except Exception:  # noqa: BLE001 - the node is between boots
            node.close()
    raise AssertionError(f"{node.name} did not come back within {timeout} s")


def _with_inventory(sc: scenario.Scenario, name: str, **sections) -> scenario.Scenario:
    """The scenario with an inventory that adds ``sections`` (put on the admin host as ``name``)."""
    data = yaml.safe_load(sc.inventory.read_text())
    data.update(sections)
    local = write_inventory(sc.work / name, data)
    return dataclasses.replace(sc, admin_inventory=sc.admin.put(local, f"{scenario.ADMIN_SITE}/{name}"))


def test_el7_kernel_ml_reboot_firewalld_and_faults(tmp_path: Path) -> None:
    """CentOS 7.9 nodes (real rpm, dnf as yum, firewalld; grub's files and a real reboot) and a
    bundle built against the el7 stand-in upstream: every phase, kernel-ml and the reboot into
    it included; the nodes' own repositories (CentOS's mirrorlist, and a site mirror that
    accepts connections and never answers) are never read. Then the faults: a repository
    signed by another key than the bundle's, firewalld `open` per the inventory, and a node
    that never comes back from the kernel phase's reboot."""
    with _site("c", 2, os_name="el7") as site:
        mirror_host = site.add_host("mirror", 4)
        connections = tmp_path / "mirror-connections"
        connections.touch()
        mirror_host.start([sys.executable, "-c", _HANGING_MIRROR, mirror_host.address, str(connections)],
                          log=tmp_path / "mirror.log",
                          ready=lambda: node_module.port_open(mirror_host.address, 80))
        old_boots = {}
        for node in site.nodes:
            assert node.ssh("uname -r").stdout.strip() == "3.10.0-1160.el7.x86_64"
            assert "CentOS Linux release 7.9.2009 (Core)" in node.ssh("cat /etc/redhat-release").stdout
            node.ssh(f"printf '[site-base]\\nname=site mirror\\nbaseurl=http://{mirror_host.address}"
                     "/centos/7/os/x86_64/\\nenabled=1\\ngpgcheck=1\\n' > /etc/yum.repos.d/site.repo")
            old_boots[node.name] = _boot_id(node)
            # this machine's SSH sessions would outlive the reboot: the rebooted node's RST to
            # a session its new boot never knew would count as a packet trying to leave
            node.close()
        sc = scenario.prepare(site, tmp_path)
        assert Bundle.open(sc.bundle).metadata["os"] == "el7"

        # a repository whose signature is not the key the sources name: the build refuses it
        upstream = upstream_service.up(site, "1.25.0", "el7")  # the one prepare started
        sources = yaml.safe_load(Path(upstream.sources_file).read_text())
        sources["repositories"]["docker-ce-gpgkey"] = sources["repositories"]["elrepo-gpgkey"]
        wrong = tmp_path / "wrong-key-sources.yaml"
        wrong.write_text(yaml.safe_dump(sources))
        refused = subprocess.run(
            [sys.executable, "-m", "kubeferry.cli", "bundle", "build", "--k8s", "1.25.0", "--os", "el7",
             "--include", "packages", "--sources", str(wrong), "--cache-dir", str(tmp_path / "cache"),
             "--output", str(tmp_path / "refused")], capture_output=True, text=True, timeout=600)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "docker-ce" in refused.stderr and "Traceback" not in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr

        _check_install(sc, ["node1"], ["node2"])
        for node in site.nodes:
            assert node.ssh("uname -r").stdout.strip() == EL7_KERNEL_ML
            assert _boot_id(node) != old_boots[node.name]
            assert node.ssh("grubby --default-kernel").stdout.strip() == f"/boot/vmlinuz-{EL7_KERNEL_ML}"
            assert node.ssh("rpm -q kernel-ml").stdout.strip() == f"kernel-ml-{EL7_KERNEL_ML}"
            assert node.ssh("systemctl is-active firewalld", check=False).stdout.strip() == "inactive"
            assert node.ssh("systemctl is-enabled firewalld", check=False).stdout.strip() == "disabled"
            assert "SELINUX=permissive" in node.ssh("cat /etc/selinux/config").stdout.split()
            assert "gpgcheck=1" in node.ssh("cat /etc/yum.repos.d/kubeferry.repo").stdout.split()
            installed = node.ssh("rpm -q kubeadm kubelet kubectl containerd.io container-selinux").stdout
            assert installed.split() == ["kubeadm-1.25.0-0.x86_64", "kubelet-1.25.0-0.x86_64",
                                         "kubectl-1.25.0-0.x86_64", "containerd.io-1.6.22-3.1.el7.x86_64",
                                         "container-selinux-2.119.2-1.911c772.el7_8.noarch"]
            locks = node.ssh("yum -q --disablerepo='*' versionlock list").stdout.split()
            assert {"kubeadm-0:1.25.0-0.*", "kubelet-0:1.25.0-0.*", "kubectl-0:1.25.0-0.*"} <= set(locks)
            assert node.ssh("systemctl is-active containerd kubelet").stdout.split() == ["active"] * 2
        # the site's mirror was never contacted by a node (only by its own readiness probe, from .1)
        assert set(connections.read_text().split()) <= {site.admin_address}, connections.read_text()

        # markers dropped, node preparation again: every step finds its work done (keys
        # imported, packages at the bundle's versions and locked in dnf's form, kernel-ml booted)
        for node in site.nodes:
            node.ssh("rm -rf /var/lib/kubeferry/phases")
        prep = sc.install("--only", "preflight,os,packages,kernel,containerd,images", run_dir="run-prep")
        assert prep.returncode == 0, prep.stdout[-3000:] + prep.stderr
        for node in site.nodes:
            for phase in ("os", "packages", "kernel", "containerd", "images"):
                assert f"[{phase}] {node.name}: ok" in prep.stdout, (phase, prep.stdout[-3000:])
        ran = "".join(p.read_text() for p in sc.run_path("run-prep").glob("*.log"))
        assert f"kernel {EL7_KERNEL_ML} is already >= 4.19.12" in ran
        for changing in ("yum install", "rpm --import", "versionlock add", "grubby --set", "systemctl reboot",
                         "systemctl restart", "mv -f", "ctr -n k8s.io images import"):
            assert changing not in ran, changing

        # firewalld `open`: running, each node's roles' ports opened; a re-run changes nothing
        opened = _with_inventory(sc, "cluster-open.yaml", os={"firewalld": "open"})
        result = opened.install("--only", "os", run_dir="run-open")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr
        assert "firewalld: open" in result.stdout
        for node, expected in ((site.node("node1"), "6443/tcp"), (site.node("node2"), "30000-32767/tcp")):
            assert node.ssh("systemctl is-active firewalld").stdout.strip() == "active"
            assert node.ssh("systemctl is-enabled firewalld").stdout.strip() == "enabled"
            ports = node.ssh("firewall-cmd --list-ports").stdout.split()
            assert expected in ports and "179/tcp" in ports and "4789/udp" in ports, ports
            assert "ipencap" in node.ssh("firewall-cmd --list-protocols").stdout.split()
        assert "6443/tcp" not in site.node("node2").ssh("firewall-cmd --list-ports").stdout.split()
        again = opened.install("--only", "os", run_dir="run-open2")
        assert again.returncode == 0 and ": changed" not in again.stdout, again.stdout[-3000:]
        _check_air_gap_held(sc)

        # a node that never comes back from the kernel phase's reboot fails, naming it, in time
        worker = site.node("node2")
        worker.ssh("grubby --set-default /boot/vmlinuz-3.10.0-1160.el7.x86_64")
        _reboot_and_wait(worker)
        assert worker.ssh("uname -r").stdout.strip() == "3.10.0-1160.el7.x86_64"
        worker.ssh("systemctl disable ssh.service >/dev/null 2>&1")  # no sshd at the next boot
        worker.ssh("rm -rf /var/lib/kubeferry/phases/kernel*")  # the phase checks the node again
        worker.close()  # this session would not survive the reboot
        impatient = _with_inventory(sc, "cluster-reboot.yaml", os={"rebootTimeout": 20})
        started = time.monotonic()
        stuck = impatient.install("--only", "kernel", run_dir="run-stuck")
        assert stuck.returncode == 1, stuck.stdout[-3000:]
        assert "node2: did not come back within 20 s" in stuck.stdout + stuck.stderr
        assert time.monotonic() - started < 180
        assert not node_module.port_open(worker.address, 22)  # booted, without sshd
        subprocess.run(["nsenter", "-t", str(site.init_pid(worker)), "-a", "systemctl", "start", "ssh"],
                       check=True, timeout=60)
        assert worker.ssh("uname -r").stdout.strip() == EL7_KERNEL_ML
