"""``kubeferry upgrade`` reads what the site runs and refuses, in one line, what kubeadm's
skew policy forbids or what cannot be meant; the plan shows kubeadm's order per host.
Through the fake connection (EL nodes answering like an installed 1.24/1.25 cluster)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from el_bundle import write_el_bundle
from fake_node import FakeNode, el_answers

from kubeferry.bundle.reader import Bundle
from kubeferry.errors import InputError
from kubeferry.installer import inventory, upgrade
from kubeferry.installer.context import InstallContext, InstallOptions
from kubeferry.installer.phases import containerd

SITE = inventory.parse({
    "cluster": {"controlPlaneEndpoint": "k8s-api.example.local:6443"},
    "registry": "none",
    "hosts": [{"name": "master1", "address": "192.168.40.180", "roles": ["control-plane"]},
              {"name": "node1", "address": "192.168.40.183", "roles": ["worker"]}],
})


def context(tmp_path: Path, releases: dict[str, str | None], os_name: str = "el7") -> InstallContext:
    """A 1.25.0 bundle (``os_name``) and nodes whose kubelet and API server run ``releases``."""
    bundle, _ = write_el_bundle(tmp_path / "bundle", os_name)
    nodes = {}
    for host in SITE.hosts:
        node = FakeNode(host, el_answers(address=host.address))
        release = releases[host.name]
        if release is not None:
            node.answer(r"kubelet\.conf", f"yes\nKubernetes v{release}\n")
        node.answer(r"kube-apiserver\.yaml",
                    f"    image: 192.168.40.2/google_containers/kube-apiserver:v{release}\n")
        tags = {"etcd": "3.5.4-0", **{c: f"v{release}" for c in upgrade.COMPONENTS}}
        node.answer(r"manifests/\*\.yaml", "".join(
            f"/etc/kubernetes/manifests/{c}.yaml:    image: 192.168.40.2/google_containers/{c}:{tag}\n"
            for c, tag in tags.items()))
        nodes[host.name] = node
    return InstallContext(inventory=SITE, bundle=Bundle.open(bundle),
                          options=InstallOptions(plan=True, run_dir=tmp_path / "run"),
                          connector=lambda host: nodes[host.name], echo=lambda line: None)


def refusal(ctx: InstallContext) -> str:
    with pytest.raises(InputError) as caught:
        upgrade.check(ctx, upgrade.read_site(ctx))
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_a_patch_or_the_next_minor_is_an_upgrade(tmp_path: Path) -> None:
    ctx = context(tmp_path, {"master1": "1.24.9", "node1": "1.24.9"})
    assert upgrade.check(ctx, upgrade.read_site(ctx)) == "1.24.9"


def test_a_run_cut_short_resumes_from_where_the_nodes_are(tmp_path: Path) -> None:
    ctx = context(tmp_path, {"master1": "1.25.0", "node1": "1.24.9"})
    assert upgrade.check(ctx, upgrade.read_site(ctx)) == "1.24.9"


def test_two_minors_at_once_are_refused_with_the_path(tmp_path: Path) -> None:
    message = refusal(context(tmp_path, {"master1": "1.23.17", "node1": "1.23.17"}))
    assert "the cluster runs 1.23.17, the bundle is 1.25.0" in message
    assert "one minor release at a time" in message and "(1.23 -> 1.24 -> 1.25)" in message


def test_an_older_bundle_is_refused(tmp_path: Path) -> None:
    message = refusal(context(tmp_path, {"master1": "1.25.3", "node1": "1.25.3"}))
    assert "the bundle is Kubernetes 1.25.0, older than the cluster's 1.25.3" in message
    assert "does not downgrade" in message


def test_nodes_at_releases_no_single_upgrade_explains_are_refused(tmp_path: Path) -> None:
    message = refusal(context(tmp_path, {"master1": "1.24.9", "node1": "1.24.3"}))
    assert "the nodes run different releases (1.24.3 on node1; 1.24.9 on master1)" in message


def test_a_bundle_of_another_os_is_refused(tmp_path: Path) -> None:
    message = refusal(context(tmp_path, {"master1": "1.24.9", "node1": "1.24.9"}, os_name="el8"))
    assert "the bundle is for el8 amd64, master1 runs centos 7 x86_64" in message


def test_a_node_outside_the_cluster_is_refused(tmp_path: Path) -> None:
    message = refusal(context(tmp_path, {"master1": "1.24.9", "node1": None}))
    assert message.startswith("node1: not part of a cluster")


def node_json(name: str, release: str, cordoned: bool = False) -> str:
    return json.dumps({"metadata": {"name": name}, "spec": {"unschedulable": cordoned},
                       "status": {"conditions": [{"type": "Ready", "status": "True"}],
                                  "nodeInfo": {"kubeletVersion": f"v{release}"}}})


def test_the_plan_follows_kubeadms_order_per_host(tmp_path: Path) -> None:
    ctx = context(tmp_path, {"master1": "1.24.9", "node1": "1.24.9"})
    master = ctx.conn(SITE.first_control_plane)
    for name in ("master1", "node1"):
        master.answer(rf"get node {name} -o json", node_json(name, "1.24.9"))
    phases = {phase.name: phase for phase in upgrade.phases()}
    first = [step.describe for step in phases["control-plane"].steps(ctx, SITE.first_control_plane)]
    assert first[0].startswith("yum install -y --disablerepo='*' --enablerepo=kubeferry kubeadm-1.25.0-0")
    assert first[-2:] == ["kubeadm upgrade plan v1.25.0 (it must name v1.25.0)",
                          "kubeadm upgrade apply v1.25.0 --yes"]
    worker = SITE.hosts[1]
    steps = [step.describe for step in phases["kubelet"].steps(ctx, worker)]
    assert "kubeadm-1.25.0-0" in steps[0] and steps[1] == "yum versionlock add kubeadm"
    assert steps[2] == "kubeadm upgrade node"
    assert steps[3] == ("kubectl drain node1 --ignore-daemonsets --delete-emptydir-data --timeout=300s"
                        " (on master1)")
    # drained: containerd's config for the new release (1.25's pause 3.8, not 1.24's 3.7), then
    # kubelet and kubectl
    assert steps[4] == "write /etc/containerd/config.toml"
    assert steps[7].startswith("check that containerd answers")
    assert "kubelet-1.25.0-0" in steps[8] and "kubectl-1.25.0-0" in steps[8]
    assert steps[9] == "yum versionlock add kubectl kubelet"
    assert steps[-3:] == ["systemctl daemon-reload && systemctl restart kubelet",
                          "wait until node1 is Ready at v1.25.0", "kubectl uncordon node1 (on master1)"]
    changing = ("yum install", "kubeadm upgrade", "systemctl restart")
    assert not [c for c in master.commands + ctx.conn(worker).commands if c.startswith(changing)]


def test_a_control_plane_cut_short_inside_kubeadm_upgrade_runs_it_again(tmp_path: Path) -> None:
    ctx = context(tmp_path, {"master1": "1.24.9", "node1": "1.24.9"})
    first = ctx.conn(SITE.first_control_plane)
    phase = {phase.name: phase for phase in upgrade.phases()}["control-plane"]
    # kubeadm rewrote etcd's manifest and was cut before the API server's: apply again
    first.answer(r"manifests/\*\.yaml", "/etc/kubernetes/manifests/etcd.yaml:    image: r/etcd:3.5.4-0\n"
                 "/etc/kubernetes/manifests/kube-apiserver.yaml:    image: r/kube-apiserver:v1.24.9\n")
    assert phase.steps(ctx, SITE.first_control_plane)[-1].describe == "kubeadm upgrade apply v1.25.0 --yes"
    done = "".join(f"/etc/kubernetes/manifests/{c}.yaml:    image: r/{c}:v1.25.0\n"
                   for c in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"))
    first.answer(r"manifests/\*\.yaml", done)
    assert phase.steps(ctx, SITE.first_control_plane) == []


def test_a_node_cut_short_after_its_packages_resumes_at_the_restart(tmp_path: Path) -> None:
    ctx = context(tmp_path, {"master1": "1.25.0", "node1": "1.25.0"})
    master, worker = ctx.conn(SITE.first_control_plane), ctx.conn(SITE.hosts[1])
    master.answer(r"get node node1 -o json", node_json("node1", "1.24.9", cordoned=True))
    installed = "".join(f"{name}\t0:1.25.0-0\n" for name in ("kubeadm", "kubelet", "kubectl"))
    worker.answer(r"^rpm -q --qf", installed)
    locks = "".join(f"0:{name}-1.25.0-0.*\n" for name in ("kubeadm", "kubelet", "kubectl"))
    worker.answer(r"versionlock list", locks)
    moved = hashlib.sha256(containerd.config_toml(ctx).encode()).hexdigest()  # the new pause image
    worker.answer(r"^sha256sum /etc/containerd/config\.toml", f"{moved}  /etc/containerd/config.toml\n")
    phase = {phase.name: phase for phase in upgrade.phases()}["kubelet"]
    assert [step.describe for step in phase.steps(ctx, SITE.hosts[1])] == [
        "systemctl daemon-reload && systemctl restart kubelet", "wait until node1 is Ready at v1.25.0",
        "kubectl uncordon node1 (on master1)"]


def test_workers_go_forks_at_a_time_after_the_control_planes(tmp_path: Path) -> None:
    site = inventory.parse({
        "cluster": {"controlPlaneEndpoint": "k8s-api.example.local:6443"}, "registry": "none",
        "hosts": [{"name": "master1", "address": "192.168.40.180", "roles": ["control-plane"]},
                  *({"name": f"node{i}", "address": f"192.168.40.18{i}", "roles": ["worker"]}
                    for i in (1, 2, 3))],
    })
    bundle, _ = write_el_bundle(tmp_path / "bundle", "el7")
    ctx = InstallContext(inventory=site, bundle=Bundle.open(bundle),
                         options=InstallOptions(plan=True, drain_batch=2, run_dir=tmp_path / "run"))
    phase = {phase.name: phase for phase in upgrade.phases()}["kubelet"]
    assert phase.groups is not None
    groups = [([host.name for host in group.hosts], group.parallel) for group in phase.groups(ctx)]
    assert groups == [(["master1"], False), (["node1", "node2"], True), (["node3"], True)]
