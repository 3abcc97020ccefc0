"""The kubeadm configuration files kubeferry writes (kubeadm.k8s.io/v1beta3, kubeadm 1.22+).

``init_documents`` is what ``kubeadm init --config`` reads on the first control plane:
InitConfiguration (bootstrap token, certificate key, this node), ClusterConfiguration,
KubeProxyConfiguration and KubeletConfiguration. ``join_document`` is the
JoinConfiguration of one joining node. Tokens and certificate keys go into these files
(written 0600 through stdin), never onto a command line: ``--config`` cannot be mixed with
``--certificate-key`` anyway (FACTS.md). Every field here is in the v1beta3 schema; the lab's
strict kubeadm double rejects unknown ones (tests check against its schema offline).
"""

from __future__ import annotations

import secrets
from typing import Any

import yaml

from kubeferry.bundle.metadata import RecordedImages
from kubeferry.errors import OperationError
from kubeferry.installer.image_names import site_image
from kubeferry.installer.inventory import APISERVER_PORT, Host, Inventory, RegistrySettings
from kubeferry.versions import UPSTREAM_REPOSITORY

KUBEADM_API = "kubeadm.k8s.io/v1beta3"
KUBE_PROXY_API = "kubeproxy.config.k8s.io/v1alpha1"
KUBELET_API = "kubelet.config.k8s.io/v1beta1"
CRI_SOCKET = "unix:///var/run/containerd/containerd.sock"
TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
INIT_TOKEN_TTL = "2h0m0s"  # kubeferry joins with a fresh token of its own; this one is spare
DISCOVERY_TIMEOUT = "5m0s"


def new_token() -> str:
    """A bootstrap token, ``[a-z0-9]{6}.[a-z0-9]{16}`` as kubeadm wants it."""
    pick = lambda n: "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(n))  # noqa: E731
    return f"{pick(6)}.{pick(16)}"


def new_certificate_key() -> str:
    """A certificate key: 32 random bytes, hex (the AES key of the kubeadm-certs Secret)."""
    return secrets.token_hex(32)


# -- images ---------------------------------------------------------------------------------


def image_repository(registry: RegistrySettings | None) -> str:
    """ClusterConfiguration.imageRepository: the Harbor project, or upstream's name.

    With ``registry: none`` the images were imported under their upstream names, so the
    repository is spelled out as ``registry.k8s.io`` even where kubeadm's default differs
    (k8s.gcr.io on 1.24.0-1.24.8, docs/notes.md).
    """
    return registry.repository if registry is not None else UPSTREAM_REPOSITORY


def kubeadm_image_names(images: RecordedImages, repository: str,
                        dns_repository: str | None = None) -> list[str]:
    """What kubeadm pulls with ``imageRepository: repository`` (and ``dns.imageRepository``).

    kubeadm's rule (cmd/kubeadm/app/images/images.go): every image under the repository;
    coredns under ``<repo>/coredns/coredns`` only when the repository in use is kubeadm's
    own default (``kubeadm_repository``: k8s.gcr.io before 1.24.9), else ``<repo>/coredns``.
    """
    repository = repository.rstrip("/")
    names = [f"{repository}/{name}:{images.tag}" for name in
             ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")]
    names += [f"{repository}/pause:{images.pause}", f"{repository}/etcd:{images.etcd}"]
    dns = (dns_repository or repository).rstrip("/")
    if dns == images.kubeadm_repository:
        dns = f"{dns}/coredns"
    return [*names, f"{dns}/coredns:{images.coredns}"]


def dns_image_repository(images: RecordedImages, registry: RegistrySettings | None) -> str | None:
    """ClusterConfiguration.dns.imageRepository, when kubeadm's rule alone would miss coredns.

    Harbor holds coredns flat (``<project>/coredns``: the rule finds it); upstream names keep
    ``registry.k8s.io/coredns/coredns``, which the rule finds only where registry.k8s.io is
    kubeadm's default (1.24.9 on). Elsewhere the override names the real repository.
    """
    wanted = site_image(f"{UPSTREAM_REPOSITORY}/coredns/coredns:{images.coredns}", registry)
    repository = image_repository(registry)
    if kubeadm_image_names(images, repository)[-1] == wanted:
        return None
    override = wanted.rsplit("/", 1)[0]
    if kubeadm_image_names(images, repository, override)[-1] != wanted:
        raise OperationError(f"internal error: no dns.imageRepository makes kubeadm ask for {wanted}")
    return override


def kubeadm_images(images: RecordedImages, registry: RegistrySettings | None) -> list[str]:
    """Every image ``kubeadm init`` will pull with the configuration kubeferry writes."""
    return kubeadm_image_names(images, image_repository(registry), dns_image_repository(images, registry))


# -- documents ----------------------------------------------------------------------------------


def _node_registration(host: Host) -> dict[str, Any]:
    return {
        "name": host.name,
        "criSocket": CRI_SOCKET,
        # the address kubelet reports (nodes with several interfaces pick the inventory's)
        "kubeletExtraArgs": {"node-ip": host.address},
    }


def cert_sans(inventory: Inventory) -> list[str]:
    """apiServer.certSANs: the endpoint's name, the VIP, every control plane's name and address."""
    cluster = inventory.cluster
    names = [cluster.endpoint_host, cluster.vip or ""]
    for host in inventory.control_planes:
        names += [host.name, host.address]
    return list(dict.fromkeys(name for name in names if name))


def cluster_document(inventory: Inventory, images: RecordedImages) -> dict[str, Any]:
    cluster = inventory.cluster
    doc: dict[str, Any] = {
        "apiVersion": KUBEADM_API,
        "kind": "ClusterConfiguration",
        "kubernetesVersion": images.tag,
        "controlPlaneEndpoint": cluster.control_plane_endpoint,
        "imageRepository": image_repository(inventory.registry),
        "networking": {
            "podSubnet": cluster.pod_subnet,
            "serviceSubnet": cluster.service_subnet,
            "dnsDomain": cluster.dns_domain,
        },
        "apiServer": {"certSANs": cert_sans(inventory)},
    }
    dns = dns_image_repository(images, inventory.registry)
    if dns is not None:
        doc["dns"] = {"imageRepository": dns}
    return doc


def init_documents(inventory: Inventory, host: Host, images: RecordedImages, *, token: str | None,
                   certificate_key: str | None) -> list[dict[str, Any]]:
    """The documents of ``kubeadm init --config`` for the first control plane ``host``.

    ``token=None`` leaves bootstrapTokens out (``kubeadm init phase upload-certs --config``
    reads only the certificate key from it); with ``certificate_key=None`` too it is the
    secret-free record init leaves on the node.
    """
    init: dict[str, Any] = {"apiVersion": KUBEADM_API, "kind": "InitConfiguration"}
    if token is not None:
        init["bootstrapTokens"] = [{
            "token": token,
            "ttl": INIT_TOKEN_TTL,
            "description": "kubeferry init (joins use a fresh token)",
            "usages": ["signing", "authentication"],
            "groups": ["system:bootstrappers:kubeadm:default-node-token"],
        }]
    if certificate_key is not None:
        init["certificateKey"] = certificate_key
    init.update({
        "nodeRegistration": _node_registration(host),
        "localAPIEndpoint": {"advertiseAddress": host.address, "bindPort": APISERVER_PORT},
    })
    proxy = {"apiVersion": KUBE_PROXY_API, "kind": "KubeProxyConfiguration",
             "mode": inventory.cluster.proxy_mode}
    kubelet = {"apiVersion": KUBELET_API, "kind": "KubeletConfiguration", "cgroupDriver": "systemd"}
    return [init, cluster_document(inventory, images), proxy, kubelet]


def join_document(inventory: Inventory, host: Host, *, token: str, ca_hash: str,
                  certificate_key: str | None = None) -> dict[str, Any]:
    """The JoinConfiguration of ``host``; a control plane also gets the certificate key."""
    doc: dict[str, Any] = {
        "apiVersion": KUBEADM_API,
        "kind": "JoinConfiguration",
        "discovery": {
            "bootstrapToken": {
                "apiServerEndpoint": inventory.cluster.control_plane_endpoint,
                "token": token,
                "caCertHashes": [ca_hash],
            },
            "timeout": DISCOVERY_TIMEOUT,
        },
        "nodeRegistration": _node_registration(host),
    }
    if host.is_control_plane:
        if not certificate_key:
            raise OperationError(f"internal error: control plane {host.name} joins without a certificate key")
        doc["controlPlane"] = {
            "localAPIEndpoint": {"advertiseAddress": host.address, "bindPort": APISERVER_PORT},
            "certificateKey": certificate_key,
        }
    return doc


def render(documents: list[dict[str, Any]]) -> str:
    """The documents as one multi-document YAML file."""
    return yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False)
