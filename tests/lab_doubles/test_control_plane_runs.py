"""With run_control_plane, the kubelet double runs the control plane kubeadm's manifests describe:
a real etcd and the API server stand-in, which real kubectl then drives with init's admin.conf."""

from __future__ import annotations

import json
import subprocess
import time

from doubles_configs import CALICO, dump, init_docs
from doubles_harness import Lab, Node

from kubeferry.lab.kubectl_release import kubectl_binary


def kubectl(node: Node, minor: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = ["ip", "netns", "exec", node.netns, str(kubectl_binary(minor)),
               "--kubeconfig", str(node.root / "etc/kubernetes/admin.conf"),
               "--cache-dir", str(node.root / f"kubectl-cache-{minor}"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_init_starts_etcd_and_the_api_server_that_real_kubectl_uses(lab: Lab) -> None:
    cp1 = lab.node("cp1")
    cp1.write("etc/kubeferry-lab/double.conf",
              "wait_timeout: 60\nheartbeat_interval: 1\nrun_control_plane: true\netcd_binary: /usr/bin/etcd\n")
    cp1.start_kubelet()
    docs = init_docs(endpoint="127.0.0.11:6443")
    init = cp1.run("kubeadm", "init", "--config", cp1.config("init.yaml", dump(docs)), "--upload-certs")
    assert init.returncode == 0, init.stderr + init.stdout
    manifest = (cp1.root / "etc/kubernetes/manifests/etcd.yaml").read_text()
    assert "--initial-cluster=cp1=https://127.0.0.11:2380" in manifest
    assert "--cert-file=/etc/kubernetes/pki/etcd/server.crt" in manifest
    beat = json.loads((lab.state / "heartbeats/cp1.json").read_text())
    assert beat["control_plane"] == {"etcd": "Running", "kube-apiserver": "Running"}

    for minor in ("1.25", "1.26"):
        version = kubectl(cp1, minor, "version", "-o", "json")
        assert json.loads(version.stdout)["serverVersion"]["gitVersion"] == "v1.25.0", version.stderr
        namespaces = kubectl(cp1, minor, "get", "namespaces", "-o", "name")
        assert "namespace/kube-system" in namespaces.stdout.split(), namespaces.stderr
        dry = kubectl(cp1, minor, "apply", "--dry-run=server", "-f", str(CALICO))
        assert dry.returncode == 0, dry.stderr
        assert "daemonset.apps/calico-node created (server dry run)" in dry.stdout
    assert "No resources found" in kubectl(cp1, "1.25", "get", "crd").stderr

    # the kubelet double registers its Node and its pods through kubelet.conf
    deadline = time.time() + 30
    pods: list[str] = []
    while time.time() < deadline and "kube-apiserver-cp1" not in pods:
        time.sleep(1)
        pods = kubectl(cp1, "1.25", "get", "pods", "-n", "kube-system", "-o", "name").stdout.replace("pod/", "").split()
    assert {"etcd-cp1", "kube-apiserver-cp1", "kube-controller-manager-cp1", "kube-scheduler-cp1"} <= set(pods)
    nodes = kubectl(cp1, "1.26", "get", "nodes")
    assert nodes.stdout.splitlines()[1].split()[:3] == ["cp1", "NotReady", "control-plane"], nodes.stdout

    log = cp1.root / "var/log/pods/kube-system_etcd-cp1/etcd.log"
    assert "ready to serve client requests" in log.read_text()
    cp1.stop()  # the kubelet double stops what it started
    deadline = time.time() + 20
    while time.time() < deadline and kubectl(cp1, "1.25", "get", "--raw", "/healthz").returncode == 0:
        time.sleep(0.5)
    assert kubectl(cp1, "1.25", "get", "--raw", "/healthz").returncode == 1
