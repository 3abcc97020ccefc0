"""kubeadm configuration: valid v1beta3 (checked offline with the lab double's schema), and
the images kubeadm will ask for are exactly the ones the site holds."""

from __future__ import annotations

import re

import pytest
import yaml
from cluster_schema import decode, doublelib

from kubeferry.bundle.metadata import RecordedImages
from kubeferry.errors import OperationError
from kubeferry.installer import inventory as inventory_module
from kubeferry.installer import kubeadm_config as kc
from kubeferry.installer.harbor_names import harbor_name
from kubeferry.installer.image_names import site_image
from kubeferry.versions import image_set as release_images
from kubeferry.versions import supported_versions


def image_set(version: str) -> RecordedImages:
    """The image set as a bundle of ``version`` records it (what init and join read)."""
    return RecordedImages.of_release(release_images(version))

HARBOR = {"url": "https://harbor.example.local", "project": "google_containers"}


def make_inventory(registry=None, vip: str | None = "10.0.0.100", endpoint: str = "k8s-api.lab:8443",
                   control_planes: int = 3, workers: int = 1):
    hosts = [{"name": f"cp{i}", "address": f"10.0.0.1{i}", "roles": ["control-plane"]}
             for i in range(1, control_planes + 1)]
    hosts += [{"name": f"w{i}", "address": f"10.0.0.2{i}", "roles": ["worker"]}
              for i in range(1, workers + 1)]
    cluster = {"controlPlaneEndpoint": endpoint, "podSubnet": "10.244.0.0/16"}
    if vip:
        cluster["vip"] = vip
    return inventory_module.parse({"cluster": cluster, "registry": registry or "none", "hosts": hosts})


@pytest.mark.parametrize("registry", [None, HARBOR])
def test_init_documents_are_strict_v1beta3(registry) -> None:
    inventory = make_inventory(registry)
    key, token = kc.new_certificate_key(), kc.new_token()
    text = kc.render(kc.init_documents(inventory, inventory.first_control_plane, image_set("1.25.0"),
                                       token=token, certificate_key=key))
    assert decode(text) == [
        ("kubeadm.k8s.io/v1beta3", "InitConfiguration"),
        ("kubeadm.k8s.io/v1beta3", "ClusterConfiguration"),
        ("kubeproxy.config.k8s.io/v1alpha1", "KubeProxyConfiguration"),
        ("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration"),
    ]
    init, cluster, proxy, kubelet = yaml.safe_load_all(text)
    assert init["certificateKey"] == key and init["bootstrapTokens"][0]["token"] == token
    assert init["nodeRegistration"]["criSocket"] == "unix:///var/run/containerd/containerd.sock"
    assert init["nodeRegistration"]["name"] == "cp1"
    assert init["localAPIEndpoint"] == {"advertiseAddress": "10.0.0.11", "bindPort": 6443}
    assert cluster["kubernetesVersion"] == "v1.25.0"
    assert cluster["controlPlaneEndpoint"] == "k8s-api.lab:8443"
    assert cluster["networking"] == {"podSubnet": "10.244.0.0/16", "serviceSubnet": "10.96.0.0/12",
                                     "dnsDomain": "cluster.local"}
    assert cluster["imageRepository"] == ("registry.k8s.io" if registry is None
                                          else "harbor.example.local/google_containers")
    assert "dns" not in cluster  # the path rule alone finds coredns in both cases on 1.25
    sans = cluster["apiServer"]["certSANs"]
    assert sans[:2] == ["k8s-api.lab", "10.0.0.100"] and "cp3" in sans and "10.0.0.13" in sans
    assert proxy["mode"] == "ipvs" and kubelet["cgroupDriver"] == "systemd"


def test_join_documents() -> None:
    inventory = make_inventory(HARBOR)
    token, key, ca_hash = kc.new_token(), kc.new_certificate_key(), "sha256:" + "ab" * 32
    control_plane = kc.join_document(inventory, inventory.host("cp2"), token=token, ca_hash=ca_hash,
                                     certificate_key=key)
    worker = kc.join_document(inventory, inventory.host("w1"), token=token, ca_hash=ca_hash)
    for document in (control_plane, worker):
        assert decode(kc.render([document])) == [("kubeadm.k8s.io/v1beta3", "JoinConfiguration")]
        assert document["discovery"]["bootstrapToken"] == {
            "apiServerEndpoint": "k8s-api.lab:8443", "token": token, "caCertHashes": [ca_hash]}
    assert control_plane["controlPlane"] == {
        "localAPIEndpoint": {"advertiseAddress": "10.0.0.12", "bindPort": 6443}, "certificateKey": key}
    assert "controlPlane" not in worker
    assert worker["nodeRegistration"]["kubeletExtraArgs"] == {"node-ip": "10.0.0.21"}
    with pytest.raises(OperationError, match="without a certificate key"):
        kc.join_document(inventory, inventory.host("cp2"), token=token, ca_hash=ca_hash)


def test_upload_certs_document_has_no_token() -> None:
    inventory = make_inventory()
    docs = kc.init_documents(inventory, inventory.first_control_plane, image_set("1.25.0"), token=None,
                             certificate_key=kc.new_certificate_key())
    assert "bootstrapTokens" not in docs[0]
    decode(kc.render(docs))


def test_secrets_have_kubeadms_formats() -> None:
    assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", kc.new_token())
    assert re.fullmatch(r"[0-9a-f]{64}", kc.new_certificate_key())
    assert kc.new_token() != kc.new_token()


@pytest.mark.parametrize("version", supported_versions())
@pytest.mark.parametrize("registry", [None, HARBOR])
def test_kubeadm_asks_for_exactly_the_site_images(version: str, registry) -> None:
    """With the config kubeferry writes, kubeadm's names (coredns path rule included) are the
    names the site holds: Harbor's mapped names, or the upstream names ctr imported."""
    images = image_set(version)
    inventory = make_inventory(registry)
    settings = inventory.registry
    asked = kc.kubeadm_images(images, settings)
    assert sorted(asked) == sorted(site_image(name, settings) for name in images.kubeadm_images)
    cluster = kc.cluster_document(inventory, images)
    dns = (cluster.get("dns") or {}).get("imageRepository")
    assert kc.kubeadm_image_names(images, cluster["imageRepository"], dns)[-1] in asked


def test_coredns_override_only_where_kubeadms_default_differs() -> None:
    """1.24.0-1.24.8 default to k8s.gcr.io: the upstream registry.k8s.io names need dns.imageRepository."""
    old, new = image_set("1.24.0"), image_set("1.25.0")
    assert old.kubeadm_repository == "k8s.gcr.io"
    assert kc.dns_image_repository(old, None) == "registry.k8s.io/coredns"
    assert kc.dns_image_repository(new, None) is None
    harbor = make_inventory(HARBOR).registry
    assert kc.dns_image_repository(old, harbor) is None  # flat in Harbor: the rule finds it
    assert harbor_name("registry.k8s.io/coredns/coredns:v1.8.6", harbor) == \
        "harbor.example.local/google_containers/coredns:v1.8.6"


def test_the_doubles_image_rule_agrees() -> None:
    """The kubeadm double computes the images from the same ClusterConfiguration."""
    lib = doublelib()
    images = image_set("1.25.0")
    for registry in (None, HARBOR):
        inventory = make_inventory(registry)
        cluster = kc.cluster_document(inventory, images)
        env = type("Env", (), {"release": {"repository": "registry.k8s.io", "pause": images.pause,
                                           "etcd": images.etcd, "coredns": images.coredns},
                               "version": images.kubernetes})()
        assert sorted(lib.kubeadm_images(env, cluster).values()) == \
            sorted(kc.kubeadm_images(images, inventory.registry))


def test_what_kubeadm_asks_for_under_its_default_and_a_custom_repository() -> None:
    old = image_set("1.24.0")
    assert kc.kubeadm_image_names(old, old.kubeadm_repository) == [
        "k8s.gcr.io/kube-apiserver:v1.24.0",
        "k8s.gcr.io/kube-controller-manager:v1.24.0",
        "k8s.gcr.io/kube-scheduler:v1.24.0",
        "k8s.gcr.io/kube-proxy:v1.24.0",
        "k8s.gcr.io/pause:3.7",
        "k8s.gcr.io/etcd:3.5.3-0",
        "k8s.gcr.io/coredns/coredns:v1.8.6",
    ]
    # The bundle still names what upstream serves today.
    assert old.kubeadm_images[-1] == "registry.k8s.io/coredns/coredns:v1.8.6"
    harbor = kc.kubeadm_image_names(image_set("1.25.0"), "harbor.local/google_containers/")
    assert harbor[-1] == "harbor.local/google_containers/coredns:v1.9.3"
    assert harbor[4] == "harbor.local/google_containers/pause:3.8"
