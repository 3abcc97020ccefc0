"""The main job end to end on the air-gap lab: a bundle built against the stand-in internet,
installed on real nodes with the Harbor stand-in and the kubeadm double by the bundle's own
`kubeferry.pyz`, run with a stock python3 on the site's air-gapped admin host; then the same
install again, which must change and send nothing. No lab host may try to send a packet out
of the site meanwhile (the air-gap counter stays at 0)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from kubeferry.bundle.reader import Bundle
from kubeferry.lab import scenario
from kubeferry.lab.double_state import ClusterRecord
from kubeferry.lab.site import Site

pytestmark = [pytest.mark.real, pytest.mark.lab]
# What a worker runs: kube-proxy, the sandbox, coredns, calico, and verify's DNS pod.
WORKER_NEEDS = ("kube-proxy", "pause", "coredns", "calico/", "library/busybox")


@contextmanager
def _site(prefix: str, nodes: int) -> Iterator[Site]:
    """A site of its own for one test, always taken down."""
    site = scenario.site_up(f"{prefix}{os.getpid() % 10000}", nodes)
    try:
        yield site
    finally:
        site.down()


def _containerd_images(node) -> set[str]:
    return set(node.ssh("ctr -n k8s.io images ls -q").stdout.split())


def _check_install(sc: scenario.Scenario, control_planes: list[str], workers: list[str]) -> None:
    first = sc.install()
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

    again = sc.install(run_dir="run2")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr
    assert ": changed" not in again.stdout
    rerun_logs = "".join(p.read_text() for p in sc.run_path("run2").glob("*.log"))
    assert "cat >>" not in rerun_logs  # nothing re-sent
    assert "kubeadm init" not in rerun_logs and "kubeadm join" not in rerun_logs
    _check_air_gap_held(sc)


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


def test_ha_three_control_planes_vip_one_worker(tmp_path: Path) -> None:
    with _site("h", 4) as site:
        sc = scenario.prepare(site, tmp_path, ha=True)
        _check_install(sc, ["node1", "node2", "node3"], ["node4"])
        holders = [node.name for node in site.nodes[:3]
                   if site.vip in node.ssh("ip -4 -o addr show").stdout]
        assert len(holders) == 1, holders


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
        refused = site.node("node1").ssh(
            f"echo '{pod}' | kubectl --kubeconfig /etc/kubernetes/admin.conf apply -f -", check=False)
        assert refused.exit_status == 1 and "not imported on node1, node2" in refused.stderr


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
