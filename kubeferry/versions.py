"""Which images a Kubernetes release needs, from ``manifests/kubernetes.yaml`` and ``calico.yaml``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kubeferry import manifests
from kubeferry.errors import InputError

UPSTREAM_REPOSITORY = "registry.k8s.io"
_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)$")


def _key(version: str) -> tuple[int, int, int]:
    match = _VERSION.match(version)
    if not match:
        raise ValueError(version)
    return tuple(int(part) for part in match.groups())  # type: ignore[return-value]


def supported_versions() -> list[str]:
    """Every patch release kubeferry has an image set for, oldest first."""
    return sorted((str(v) for v in manifests.load("kubernetes")["releases"]), key=_key)


def supported_range() -> str:
    """The supported releases as one phrase, for error messages: ``1.24.0-1.31.14``."""
    versions = supported_versions()
    return f"{versions[0]}-{versions[-1]}"


@dataclass(frozen=True)
class ImageSet:
    """The images one Kubernetes release needs: kubeadm's set plus calico."""

    kubernetes: str
    kubeadm_repository: str
    pause: str
    etcd: str
    coredns: str
    calico: str
    calico_images: tuple[str, ...]

    @property
    def minor(self) -> str:
        major, minor, _ = _key(self.kubernetes)
        return f"{major}.{minor}"

    @property
    def pause_image(self) -> str:
        """The sandbox image kubeadm uses; containerd's sandbox_image must match it."""
        return f"{UPSTREAM_REPOSITORY}/pause:{self.pause}"

    @property
    def kubeadm_images(self) -> tuple[str, ...]:
        """kubeadm's images under their upstream names (``kubeadm config images list``)."""
        tag = "v" + self.kubernetes.replace("+", "_")
        repo = UPSTREAM_REPOSITORY
        return (
            f"{repo}/kube-apiserver:{tag}",
            f"{repo}/kube-controller-manager:{tag}",
            f"{repo}/kube-scheduler:{tag}",
            f"{repo}/kube-proxy:{tag}",
            self.pause_image,
            f"{repo}/etcd:{self.etcd}",
            f"{repo}/coredns/coredns:{self.coredns}",
        )

    @property
    def images(self) -> tuple[str, ...]:
        """Every image a cluster of this release needs, kubeadm's first."""
        return self.kubeadm_images + self.calico_images


def image_set(version: str) -> ImageSet:
    """The image set for ``version`` (``1.25.0`` or ``v1.25.0``); InputError if unsupported."""
    normalized = version[1:] if version.startswith("v") else version
    releases = {str(k): v for k, v in manifests.load("kubernetes")["releases"].items()}
    row = releases.get(normalized)
    if row is None:
        raise InputError(
            f"Kubernetes {version!r} is not supported: choose a release in {supported_range()}"
        )
    calico = manifests.load("calico")
    major, minor, _ = _key(normalized)
    calico_version = calico["kubernetes"][f"{major}.{minor}"]
    return ImageSet(
        kubernetes=normalized,
        kubeadm_repository=row["repository"],
        pause=str(row["pause"]),
        etcd=str(row["etcd"]),
        coredns=str(row["coredns"]),
        calico=calico_version,
        calico_images=tuple(calico["releases"][calico_version]["images"]),
    )
