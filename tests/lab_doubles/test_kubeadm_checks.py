"""The kubeadm double refuses what kubeadm 1.25 refuses: config, images, node preflight state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from doubles_configs import SITE, dump, init_docs, with_change
from doubles_harness import KUBE_IMAGES, REGISTRY, Lab, Node

PREFLIGHT_TAIL = "[preflight] If you know what you are doing, you can make a check non-fatal with `--ignore-preflight-errors=...`"


def init(node: Node, docs: list[dict], *flags: str):
    return node.run("kubeadm", "init", "--config", node.config("init.yaml", dump(docs)), *flags)


def images_list(node: Node, docs: list[dict]) -> list[str]:
    result = node.run(
        "kubeadm", "config", "images", "list", "--config", node.config("images.yaml", dump(docs))
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_unknown_field_fails_like_strict_decoding(lab: Lab) -> None:
    node = lab.node("cp1")
    docs = with_change(init_docs(), "ClusterConfiguration", "dns.type", "CoreDNS")
    result = init(node, docs)
    assert result.returncode == 1
    assert (
        'error unmarshaling configuration schema.GroupVersionKind{Group:"kubeadm.k8s.io", Version:"v1beta3", '
        'Kind:"ClusterConfiguration"}: strict decoding error: unknown field "dns.type"'
    ) in result.stderr
    proxy = with_change(init_docs(), "KubeProxyConfiguration", "ipvs.schedulr", "rr")
    assert 'unknown field "ipvs.schedulr"' in init(node, proxy).stderr
    kubelet = with_change(init_docs(), "KubeletConfiguration", "cgroupdriver", "systemd")
    assert 'unknown field "cgroupdriver"' in init(node, kubelet).stderr
    typed = with_change(init_docs(), "InitConfiguration", "localAPIEndpoint.bindPort", "6443")
    assert (
        "cannot unmarshal string into Go struct field localAPIEndpoint.bindPort of type int32"
        in init(node, typed).stderr
    )
    duplicate = node.config(
        "dup.yaml",
        "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\n"
        "imageRepository: a\nimageRepository: b\n",
    )
    assert (
        'key "imageRepository" already set in map'
        in node.run("kubeadm", "init", "--config", duplicate).stderr
    )
    old = [
        dict(d, apiVersion="kubeadm.k8s.io/v1beta2") if d["apiVersion"].startswith("kubeadm") else d
        for d in init_docs()
    ]
    assert "accepts only kubeadm.k8s.io/v1beta3" in init(node, old).stderr
    assert not (node.root / "etc/kubernetes/admin.conf").exists()
    assert all(c["exit_code"] == 1 for c in lab.record.invocations(program="kubeadm"))


def test_config_cannot_be_mixed_with_certificate_key(lab: Lab) -> None:
    node = lab.node("cp1")
    result = init(node, init_docs(), "--certificate-key", "a" * 64)
    assert result.returncode == 1
    assert "can not mix '--config' with arguments [certificate-key]" in result.stderr
    assert lab.record.invocations()[-1]["secret_flags"] == ["--certificate-key"]
    assert "a" * 64 not in str(lab.record.invocations())


def test_coredns_path_rule(lab: Lab) -> None:
    node = lab.node("cp1")
    upstream = images_list(node, init_docs(repository="registry.k8s.io"))
    assert upstream == [
        "registry.k8s.io/kube-apiserver:v1.25.0",
        "registry.k8s.io/kube-controller-manager:v1.25.0",
        "registry.k8s.io/kube-scheduler:v1.25.0",
        "registry.k8s.io/kube-proxy:v1.25.0",
        "registry.k8s.io/pause:3.8",
        "registry.k8s.io/etcd:3.5.4-0",
        "registry.k8s.io/coredns/coredns:v1.9.3",
    ]
    assert images_list(node, init_docs())[-1] == f"{SITE}/coredns:v1.9.3"
    nested = f"{REGISTRY}/nested"
    override = with_change(
        init_docs(repository=nested), "ClusterConfiguration", "dns.imageRepository", f"{nested}/coredns"
    )
    assert images_list(node, override)[-1] == f"{nested}/coredns/coredns:v1.9.3"
    external = with_change(
        init_docs(), "ClusterConfiguration", "etcd", {"external": {"endpoints": ["https://e:2379"]}}
    )
    assert not any("/etcd:" in i for i in images_list(node, external))

    # `nested` holds coredns only at the upstream path: a custom repository alone asks for the flat one
    result = init(node, init_docs(repository=nested))
    assert result.returncode == 1
    assert f"[ERROR ImagePull]: failed to pull image {nested}/coredns:v1.9.3" in result.stderr
    assert "kube-apiserver" not in result.stderr.split("[ERROR ImagePull]", 1)[1]
    pulled = node.run(
        "kubeadm", "config", "images", "pull", "--config", node.config("pull.yaml", dump(override))
    )
    assert pulled.returncode == 0, pulled.stderr
    assert f"{nested}/coredns/coredns:v1.9.3" in node.containerd.ctr("images", "ls", "-q").stdout


def test_missing_image_fails_naming_it(lab: Lab) -> None:
    node = lab.node("cp1")
    result = init(node, init_docs(repository="registry.k8s.io"))
    assert result.returncode == 1
    for image in (
        "registry.k8s.io/kube-apiserver:v1.25.0",
        "registry.k8s.io/coredns/coredns:v1.9.3",
        "registry.k8s.io/pause:3.8",
    ):
        assert f"[ERROR ImagePull]: failed to pull image {image}: output: " in result.stderr
    assert "error execution phase preflight: [preflight] Some fatal errors occurred:" in result.stderr
    assert PREFLIGHT_TAIL in result.stderr
    assert not (node.root / "etc/kubernetes/manifests").exists()


def node_ctr(node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            node.netns,
            "ctr",
            "--address",
            str(node.containerd.socket),
            "-n",
            "k8s.io",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_all_images_present_passes_without_any_registry(lab: Lab) -> None:
    """Images imported under kubeadm's default names (as `ctr import` of a bundle does) suffice."""
    node = lab.node("cp1")
    node.containerd.stop()
    node.containerd.write_config(sandbox="registry.k8s.io/pause:3.8")
    node.containerd.start()
    for image in KUBE_IMAGES + ["coredns:v1.9.3"]:
        source = f"{SITE}/{image}"
        pulled = node_ctr(
            node, "images", "pull", "--hosts-dir", str(node.root / "etc/containerd/certs.d"), source
        )
        assert pulled.returncode == 0, pulled.stderr
        target = (
            "registry.k8s.io/coredns/coredns:v1.9.3"
            if image.startswith("coredns")
            else f"registry.k8s.io/{image}"
        )
        assert node_ctr(node, "images", "tag", source, target).returncode == 0
    (node.root / "etc/containerd/certs.d").rename(
        node.root / "etc/containerd/certs.d.off"
    )  # no registry at all
    node.start_kubelet()
    result = init(node, init_docs(repository="registry.k8s.io"))
    assert result.returncode == 0, result.stderr
    assert lab.record.init_config()["images"]["etcd"] == "registry.k8s.io/etcd:3.5.4-0"


def test_node_state_checks(lab: Lab) -> None:
    node = lab.node("cp1")
    node.write("proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n/swapfile file 1048572 0 -2\n")
    node.write("proc/sys/net/ipv4/ip_forward", "0\n")
    (node.root / "proc/sys/net/bridge/bridge-nf-call-iptables").unlink()
    result = init(node, init_docs())
    assert result.returncode == 1
    assert "\t[ERROR Swap]: running with swap on is not supported. Please disable swap" in result.stderr
    assert (
        "\t[ERROR FileContent--proc-sys-net-ipv4-ip_forward]: /proc/sys/net/ipv4/ip_forward contents are not set to 1"
        in result.stderr
    )
    assert (
        "\t[ERROR FileContent--proc-sys-net-bridge-bridge-nf-call-iptables]: "
        "/proc/sys/net/bridge/bridge-nf-call-iptables does not exist"
    ) in result.stderr
    ignored = init(
        node, init_docs(), "--ignore-preflight-errors=Swap,FileContent--proc-sys-net-ipv4-ip_forward"
    )
    assert "[WARNING Swap]: running with swap on is not supported" in ignored.stderr
    assert (
        "[ERROR Swap]" not in ignored.stderr and "[ERROR FileContent--proc-sys-net-bridge" in ignored.stderr
    )
    node.healthy_proc()
    node.containerd.stop()
    node.containerd.write_config(systemd_cgroup=False)
    node.containerd.start()
    mismatch = init(node, init_docs())
    assert mismatch.returncode == 1
    assert (
        '[ERROR CgroupDriver]: kubelet cgroupDriver "systemd" does not match containerd\'s runc SystemdCgroup = '
        "false"
    ) in mismatch.stderr
    node.containerd.stop()
    down = init(node, init_docs())
    assert down.returncode == 1 and "[ERROR CRI]: container runtime is not running" in down.stderr


def test_ports_in_use_and_existing_manifests(lab: Lab) -> None:
    node = lab.node("cp1")
    listener = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            node.netns,
            sys.executable,
            "-c",
            "import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            "s.bind(('0.0.0.0', 6443))\ns.listen()\nprint('up', flush=True)\ntime.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout.readline().strip() == "up"
        node.write("etc/kubernetes/manifests/etcd.yaml", "apiVersion: v1\nkind: Pod\n")
        result = init(node, init_docs())
    finally:
        os.kill(listener.pid, signal.SIGTERM)
        listener.wait(timeout=10)
    assert result.returncode == 1
    assert "\t[ERROR Port-6443]: Port 6443 is in use" in result.stderr
    assert (
        "\t[ERROR FileAvailable--etc-kubernetes-manifests-etcd.yaml]: /etc/kubernetes/manifests/etcd.yaml "
        "already exists"
    ) in result.stderr
    worker = lab.node("w1")
    worker.write("etc/kubernetes/manifests/x.yaml", "x")
    joined = worker.run(
        "kubeadm",
        "join",
        "cp.lab.test:6443",
        "--token",
        "abcdef.0123456789abcdef",
        "--discovery-token-unsafe-skip-ca-verification",
    )
    assert (
        "[ERROR DirAvailable--etc-kubernetes-manifests]: /etc/kubernetes/manifests is not empty"
        in joined.stderr
    )


def test_kubelet_crash_loops_until_configured(lab: Lab) -> None:
    node = lab.node("w1")
    result = node.run("kubelet")
    assert result.returncode == 1
    assert "failed to load Kubelet config file /var/lib/kubelet/config.yaml" in result.stderr
    assert node.run("kubelet", "--version").stdout.strip() == "Kubernetes v1.25.0"
