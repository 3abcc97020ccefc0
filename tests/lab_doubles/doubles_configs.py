"""kubeadm configuration documents the tests feed the doubles (v1beta3, as kubeferry writes them)."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from kubeferry.lab.upstream_packages import reference_dir

CERT_KEY = "1386988aa396f30129170fd3eb3215d4ff0ef27f94afb03aaddd873f667ca7a1"
SITE = "127.0.0.1:5000/google_containers"
CALICO = reference_dir() / "calico-v3.24.5.yaml"


def init_docs(
    name: str = "cp1",
    address: str = "127.0.0.11",
    endpoint: str | None = "cp.lab.test:6443",
    repository: str = SITE,
    pod_subnet: str = "10.244.0.0/16",
) -> list[dict[str, Any]]:
    cluster: dict[str, Any] = {
        "apiVersion": "kubeadm.k8s.io/v1beta3",
        "kind": "ClusterConfiguration",
        "kubernetesVersion": "1.25.0",
        "imageRepository": repository,
        "networking": {
            "podSubnet": pod_subnet,
            "serviceSubnet": "10.96.0.0/12",
            "dnsDomain": "cluster.local",
        },
    }
    if endpoint:
        cluster["controlPlaneEndpoint"] = endpoint
    return [
        {
            "apiVersion": "kubeadm.k8s.io/v1beta3",
            "kind": "InitConfiguration",
            "certificateKey": CERT_KEY,
            "localAPIEndpoint": {"advertiseAddress": address, "bindPort": 6443},
            "nodeRegistration": {"name": name, "criSocket": "unix:///var/run/containerd/containerd.sock"},
        },
        cluster,
        {"apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration", "mode": "ipvs"},
        {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "cgroupDriver": "systemd",
        },
    ]


def join_docs(
    name: str,
    token: str,
    ca_hash: str,
    endpoint: str = "cp.lab.test:6443",
    control_plane: str | None = None,
    key: str = CERT_KEY,
) -> list[dict[str, Any]]:
    join: dict[str, Any] = {
        "apiVersion": "kubeadm.k8s.io/v1beta3",
        "kind": "JoinConfiguration",
        "discovery": {
            "bootstrapToken": {"apiServerEndpoint": endpoint, "token": token, "caCertHashes": [ca_hash]}
        },
        "nodeRegistration": {"name": name, "criSocket": "unix:///var/run/containerd/containerd.sock"},
    }
    if control_plane:
        join["controlPlane"] = {
            "localAPIEndpoint": {"advertiseAddress": control_plane, "bindPort": 6443},
            "certificateKey": key,
        }
    return [join]


def dump(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


def calico(cidr: str | None, registry: str = "127.0.0.1:5000") -> str:
    """The real calico v3.24.5 manifest with the pool CIDR uncommented and images rewritten."""
    text = CALICO.read_text()
    if cidr is not None:
        text = text.replace(
            '# - name: CALICO_IPV4POOL_CIDR\n            #   value: "192.168.0.0/16"',
            f'- name: CALICO_IPV4POOL_CIDR\n              value: "{cidr}"',
        )
        assert f'value: "{cidr}"' in text, "calico manifest layout changed"
    return text.replace("docker.io/calico/", f"{registry}/calico/")


def with_change(docs: list[dict[str, Any]], kind: str, path: str, value: Any) -> list[dict[str, Any]]:
    """A copy of ``docs`` with ``path`` (dotted) of the ``kind`` document set to ``value``."""
    docs = copy.deepcopy(docs)
    doc = next(d for d in docs if d["kind"] == kind)
    *parents, last = path.split(".")
    for part in parents:
        doc = doc.setdefault(part, {})
    doc[last] = value
    return docs
