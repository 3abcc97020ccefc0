"""The kubelet double reads kubeadm-flags.env and /etc/default/kubelet as kubelet 1.25 does:
a flag that release no longer has fails it, --node-ip must be an address of the node."""

from __future__ import annotations

from doubles_harness import Lab, Node

CONFIG = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nfailSwapOn: false\n"


def kubelet(node: Node, kubeadm_args: str, extra_args: str | None = None):
    node.write("var/lib/kubelet/config.yaml", CONFIG)
    node.write("var/lib/kubelet/kubeadm-flags.env", f'KUBELET_KUBEADM_ARGS="{kubeadm_args}"\n')
    if extra_args is not None:
        node.write("etc/default/kubelet", f"KUBELET_EXTRA_ARGS={extra_args}\n")
    return node.run("kubelet", timeout=30)


def test_flags_the_release_no_longer_has_fail_the_kubelet(lab: Lab) -> None:
    node = lab.node("w1")
    dockershim = kubelet(node, "--network-plugin=cni --container-runtime-endpoint=unix:///run/c.sock")
    assert dockershim.returncode == 1
    assert 'err="failed to parse kubelet flag: unknown flag: --network-plugin"' in dockershim.stderr
    unknown = kubelet(node, "--container-runtime-endpoint=unix:///run/c.sock", "--no-such-flag=1")
    assert unknown.returncode == 1 and "unknown flag: --no-such-flag" in unknown.stderr


def test_node_ip_must_be_an_address_of_the_node(lab: Lab) -> None:
    node = lab.node("w1")  # its network namespace has only loopback
    elsewhere = kubelet(node, "--container-runtime-endpoint=unix:///run/c.sock --node-ip=10.99.0.1")
    assert elsewhere.returncode == 1
    assert 'node IP: \\"10.99.0.1\\" not found in the host\'s network interfaces' in elsewhere.stderr or \
        'node IP: "10.99.0.1" not found' in elsewhere.stderr, elsewhere.stderr
    loopback = kubelet(node, "--container-runtime-endpoint=unix:///run/c.sock", "--node-ip=127.0.0.1")
    assert loopback.returncode == 1 and "nodeIP can't be loopback address" in loopback.stderr
