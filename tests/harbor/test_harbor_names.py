"""The one name mapping: what kubeadm, containerd and calico.yaml ask Harbor for."""

from __future__ import annotations

import pytest

from kubeferry.bundle.metadata import RecordedImages
from kubeferry.errors import InputError
from kubeferry.installer.harbor_names import harbor_name, harbor_names
from kubeferry.installer.inventory import RegistrySettings
from kubeferry.installer.kubeadm_config import kubeadm_image_names
from kubeferry.versions import image_set

SITE = RegistrySettings(url="https://harbor.example.local", project="google_containers")
H = "harbor.example.local/google_containers"


@pytest.mark.parametrize(("upstream", "expected"), [
    ("registry.k8s.io/kube-apiserver:v1.25.0", f"{H}/kube-apiserver:v1.25.0"),
    ("registry.k8s.io/pause:3.8", f"{H}/pause:3.8"),
    ("registry.k8s.io/etcd:3.5.4-0", f"{H}/etcd:3.5.4-0"),
    ("registry.k8s.io/coredns/coredns:v1.9.3", f"{H}/coredns:v1.9.3"),
    ("k8s.gcr.io/coredns/coredns:v1.8.6", f"{H}/coredns:v1.8.6"),
    ("docker.io/calico/node:v3.24.5", f"{H}/calico/node:v3.24.5"),
    ("calico/cni:v3.24.5", f"{H}/calico/cni:v3.24.5"),
    ("quay.io/a/b@sha256:" + "0" * 64, f"{H}/a/b@sha256:" + "0" * 64),
])
def test_harbor_name(upstream: str, expected: str) -> None:
    assert harbor_name(upstream, SITE) == expected


def test_coredns_is_also_pushed_under_its_nested_path() -> None:
    assert harbor_names("registry.k8s.io/coredns/coredns:v1.9.3", SITE) == [
        f"{H}/coredns:v1.9.3",
        f"{H}/coredns/coredns:v1.9.3",
    ]
    assert harbor_names("registry.k8s.io/pause:3.8", SITE) == [harbor_name("registry.k8s.io/pause:3.8", SITE)]


def test_a_port_and_another_project_are_kept() -> None:
    site = RegistrySettings(url="https://10.88.0.2:8443", project="k8s")
    assert harbor_name("registry.k8s.io/pause:3.8", site) == "10.88.0.2:8443/k8s/pause:3.8"


@pytest.mark.parametrize("version", ["1.24.0", "1.25.0", "1.28.0"])
def test_every_name_kubeadm_asks_for_is_seeded(version: str) -> None:
    """kubeadm with imageRepository = settings.repository asks only for names seeding pushes."""
    images = image_set(version)
    seeded = {name for upstream in images.images for name in harbor_names(upstream, SITE)}
    assert set(kubeadm_image_names(RecordedImages.of_release(images), SITE.repository)) <= seeded
    # and with dns.imageRepository pointing at <repository>/coredns: the nested path
    assert f"{SITE.repository}/coredns/coredns:{images.coredns}" in seeded
    assert harbor_name(images.pause_image, SITE) == f"{SITE.repository}/pause:{images.pause}"


def test_a_host_that_cannot_start_an_image_name_is_refused() -> None:
    with pytest.raises(InputError, match="cannot start an image name"):
        harbor_name("registry.k8s.io/pause:3.8", RegistrySettings(url="https://harbor"))
