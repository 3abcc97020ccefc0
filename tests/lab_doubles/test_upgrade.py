"""The doubles upgrade as kubeadm 1.25 does: version policy, images first, manifests rewritten,
the kubelet at most the control plane's release, and kubectl's cordon/drain/uncordon."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from doubles_configs import dump, init_docs
from doubles_harness import ENDPOINT, PUSH_SCRIPT, Lab, Node, api_node

from kubeferry.lab.registry import Registry
from kubeferry.lab.standin_packages import build_debs

NEXT = "1.25.4"  # etcd 3.5.5-0 (1.25.0: 3.5.4-0)
NEXT_IMAGES = [f"google_containers/{name}:v{NEXT}" for name in
               ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")]
NEXT_IMAGES.append("google_containers/etcd:3.5.5-0")


@pytest.fixture(scope="module")
def next_packages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stand-in .debs of the next patch release, extracted: what a package upgrade installs."""
    out, root = tmp_path_factory.mktemp("next-debs"), tmp_path_factory.mktemp("next-root")
    for deb in build_debs(NEXT, out, interpreter=sys.executable):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, timeout=60)
    return root


def push(netns: str, registry: Registry, images: list[str]) -> None:
    subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", PUSH_SCRIPT, registry.url,
                    json.dumps(images)], check=True, timeout=120, capture_output=True)


def kubectl(node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    return node.run("kubectl", "--kubeconfig", str(node.root / "etc/kubernetes/admin.conf"), *args)


def manifest_image(node: Node, component: str) -> str:
    doc = yaml.safe_load((node.root / f"etc/kubernetes/manifests/{component}.yaml").read_text())
    return doc["spec"]["containers"][0]["image"]


def test_upgrade_apply_node_and_drain(lab: Lab, next_packages: Path, netns: str, site_registry: Registry) -> None:
    cp1 = api_node(lab, "cp1", kubelet_port=10252)
    cp1.start_kubelet()
    init = cp1.run("kubeadm", "init", "--config", cp1.config("init.yaml", dump(init_docs(endpoint=ENDPOINT))),
                   "--upload-certs")
    assert init.returncode == 0, init.stderr
    created = cp1.run("kubeadm", "token", "create", "--print-join-command")
    worker = api_node(lab, "w1", kubelet_port=10251)
    worker.start_kubelet()
    joined = worker.run("kubeadm", "join", *created.stdout.split()[2:])
    assert joined.returncode == 0, joined.stderr

    plan = cp1.run("kubeadm", "upgrade", "plan")
    assert plan.returncode == 0 and "Awesome, you're up-to-date! Enjoy!" in plan.stdout
    older_kubeadm = cp1.run("kubeadm", "upgrade", "apply", f"v{NEXT}", "--yes")
    assert older_kubeadm.returncode == 1
    assert 'is higher than the kubeadm version "v1.25.0". Upgrade kubeadm first' in older_kubeadm.stderr

    # the kubelet of the next release refuses to run against the older control plane
    worker.packages = next_packages
    early = worker.run("kubelet", timeout=60)
    assert early.returncode == 1 and "newer than the cluster's API server v1.25.0" in early.stderr
    worker.packages = cp1.packages

    cp1.packages = next_packages  # the kubeadm package upgraded
    plan = cp1.run("kubeadm", "upgrade", "plan", f"v{NEXT}")
    assert plan.returncode == 0, plan.stderr
    assert f"kubeadm upgrade apply v{NEXT}" in plan.stdout and "etcd" in plan.stdout
    two_minors = cp1.run("kubeadm", "upgrade", "apply", "v1.27.0", "--yes")
    assert two_minors.returncode == 1
    assert "at least one minor release higher than the kubeadm minor release" in two_minors.stderr
    missing = cp1.run("kubeadm", "upgrade", "apply", f"v{NEXT}", "--yes")
    assert missing.returncode == 1 and "[ERROR ImagePull]" in missing.stderr, missing.stderr
    assert manifest_image(cp1, "kube-apiserver").endswith(":v1.25.0"), "nothing changed before the pulls"

    push(netns, site_registry, NEXT_IMAGES)
    applied = cp1.run("kubeadm", "upgrade", "apply", f"v{NEXT}", "--yes")
    assert applied.returncode == 0, applied.stderr
    assert f'SUCCESS! Your cluster was upgraded to "v{NEXT}"' in applied.stdout
    assert manifest_image(cp1, "kube-apiserver") == f"127.0.0.1:5000/google_containers/kube-apiserver:v{NEXT}"
    assert manifest_image(cp1, "etcd").endswith("/etcd:3.5.5-0")
    assert lab.record.init_config()["kubernetesVersion"] == f"v{NEXT}"

    refused = kubectl(cp1, "drain", "w1")
    assert refused.returncode == 1
    assert "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore)" in refused.stderr
    drained = kubectl(cp1, "drain", "w1", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=60s")
    assert drained.returncode == 0, drained.stderr
    assert "node/w1 drained" in drained.stdout
    pods = json.loads(kubectl(cp1, "get", "pods", "-n", "kube-system", "-o", "json").stdout)["items"]
    assert not [p for p in pods if p["spec"]["nodeName"] == "w1" and p["metadata"]["name"].startswith("coredns")]
    assert "SchedulingDisabled" in kubectl(cp1, "get", "nodes").stdout
    one = json.loads(kubectl(cp1, "get", "node", "w1", "-o", "json").stdout)  # the object, not a List
    assert one["kind"] == "Node" and one["spec"]["unschedulable"] is True
    worker.packages = next_packages
    node = worker.run("kubeadm", "upgrade", "node")
    assert node.returncode == 0 and "Skipping phase. Not a control plane node." in node.stdout, node.stderr
    worker.stop()  # the kubelet restarted from the new package
    worker.containerd.start()
    worker.start_kubelet()
    uncordoned = kubectl(cp1, "uncordon", "w1")
    assert uncordoned.returncode == 0 and "node/w1 uncordoned" in uncordoned.stdout
    assert kubectl(cp1, "uncordon", "w1").stdout.strip() == "node/w1 already uncordoned"
