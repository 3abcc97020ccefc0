"""Which images a Kubernetes release needs, from ``manifests/kubernetes.yaml`` and ``calico.yaml``.

The data is keyed by patch release because kubeadm changes etcd (and sometimes coredns)
within a minor; docs/versions.md says where every value comes from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kubeferry import manifests
from kubeferry.errors import InputError

UPSTREAM_REPOSITORY = "registry.k8s.io"
# A release as kubeferry writes it: no leading zeros, an optional ``v`` read but never written.
_NUMBER = r"(0|[1-9]\d{0,3})"
_VERSION = re.compile(rf"^v?{_NUMBER}\.{_NUMBER}\.{_NUMBER}$")
_IN_TEXT = re.compile(rf"\bv?{_NUMBER}\.{_NUMBER}\.{_NUMBER}(?![\w.])")


def parse_release(value: object, what: str = "Kubernetes version") -> str:
    """The one parser for a Kubernetes release: ``1.25.0`` for ``1.25.0``, `` v1.25.0 ``.

    Used by the CLI, the inventory, the bundle metadata and the node facts, so a release
    is spelled one way everywhere (file names, URLs, comparisons). InputError naming
    ``what`` when it is not a patch release (``1.25``, ``1.25.00``, ``banana``).
    """
    text = value.strip() if isinstance(value, str) else ""
    match = _VERSION.match(text)
    if not match:
        raise InputError(f"{what} {value!r} is malformed: expected a patch release like 1.25.0")
    return ".".join(match.groups())


def release_in(text: str) -> str | None:
    """The first release named in ``text`` (``Kubernetes v1.25.0`` -> ``1.25.0``), or None."""
    match = _IN_TEXT.search(text)
    return ".".join(match.groups()) if match else None


def release_key(version: str) -> tuple[int, int, int]:
    """(1, 25, 3) for ``1.25.3``: releases sort and compare by this."""
    match = _VERSION.match(version)
    if not match:
        raise ValueError(version)
    return tuple(int(part) for part in match.groups())  # type: ignore[return-value]


def _releases() -> dict[str, Any]:
    return {str(k): v for k, v in manifests.load("kubernetes")["releases"].items()}


def supported_versions() -> list[str]:
    """Every patch release kubeferry has an image set for, oldest first."""
    return sorted(_releases(), key=release_key)


def supported_range() -> str:
    """The supported releases as one phrase, for error messages: ``1.24.0-1.31.14``."""
    versions = supported_versions()
    return f"{versions[0]}-{versions[-1]}"


def minor_of(version: str) -> str:
    """``1.25`` for ``1.25.3`` or ``v1.25.3``."""
    major, minor, _ = release_key(version)
    return f"{major}.{minor}"


@dataclass(frozen=True)
class CalicoRelease:
    """One calico release: its images and the manifest kubeferry installs it from."""

    version: str
    images: tuple[str, ...]
    manifest_url: str
    manifest_sha256: str | None  # None where no verified copy was at hand
    tested: tuple[str, ...]  # Kubernetes minors tigera tests this release with


def calico_release(version: str) -> CalicoRelease:
    """The calico release ``version`` (``v3.24.5``) as listed in ``manifests/calico.yaml``."""
    releases = manifests.load("calico")["releases"]
    row = releases.get(version)
    if row is None:
        raise InputError(
            f"calico {version!r} is not in kubeferry's data: choose one of {', '.join(releases)}"
        )
    manifest = row["manifest"]
    return CalicoRelease(
        version=version,
        images=tuple(str(image) for image in row["images"]),
        manifest_url=str(manifest["url"]),
        manifest_sha256=manifest.get("sha256"),
        tested=tuple(str(minor) for minor in row.get("tested", ())),
    )


def calico_for(kubernetes_minor: str) -> str:
    """The calico release matched to a Kubernetes minor (``1.25`` -> ``v3.24.5``)."""
    return str(manifests.load("calico")["kubernetes"][kubernetes_minor])


@dataclass(frozen=True)
class ImageSet:
    """The images one Kubernetes release needs: kubeadm's set, calico, and the images the
    install's own checks run (verify's DNS pod, from manifests/verify.yaml)."""

    kubernetes: str
    kubeadm_repository: str  # kubeadm's default imageRepository for this release
    pause: str
    etcd: str
    coredns: str
    calico: str
    calico_images: tuple[str, ...]
    calico_manifest_url: str = ""
    calico_manifest_sha256: str | None = None
    check_images: tuple[str, ...] = ()

    @property
    def minor(self) -> str:
        return minor_of(self.kubernetes)

    @property
    def tag(self) -> str:
        """The tag of the kube-* images: ``v1.25.0`` (a ``+`` becomes ``_``)."""
        return "v" + self.kubernetes.replace("+", "_")

    @property
    def pause_image(self) -> str:
        """The sandbox image kubeadm uses; containerd's sandbox_image must match it."""
        return f"{UPSTREAM_REPOSITORY}/pause:{self.pause}"

    @property
    def kubeadm_images(self) -> tuple[str, ...]:
        """kubeadm's images under their upstream names (``kubeadm config images list``)."""
        repo = UPSTREAM_REPOSITORY
        return (
            f"{repo}/kube-apiserver:{self.tag}",
            f"{repo}/kube-controller-manager:{self.tag}",
            f"{repo}/kube-scheduler:{self.tag}",
            f"{repo}/kube-proxy:{self.tag}",
            self.pause_image,
            f"{repo}/etcd:{self.etcd}",
            f"{repo}/coredns/coredns:{self.coredns}",
        )

    @property
    def images(self) -> tuple[str, ...]:
        """Every image a cluster of this release needs, kubeadm's first, the checks' last."""
        return self.kubeadm_images + self.calico_images + self.check_images


def image_set(version: str) -> ImageSet:
    """The image set for ``version`` (``1.25.0`` or ``v1.25.0``); InputError if malformed
    or unsupported."""
    try:
        normalized = parse_release(version)
    except InputError:
        raise InputError(f"Kubernetes version {version!r} is malformed: expected a patch release"
                         f" like 1.25.0; choose a release in {supported_range()}") from None
    row = _releases().get(normalized)
    if row is None:
        raise InputError(
            f"Kubernetes {normalized!r} is not supported: choose a release in {supported_range()}")
    calico = calico_release(calico_for(minor_of(normalized)))
    return ImageSet(
        kubernetes=normalized,
        kubeadm_repository=str(row["repository"]),
        pause=str(row["pause"]),
        etcd=str(row["etcd"]),
        coredns=str(row["coredns"]),
        calico=calico.version,
        calico_images=calico.images,
        calico_manifest_url=calico.manifest_url,
        calico_manifest_sha256=calico.manifest_sha256,
        check_images=check_images(),
    )


def check_images() -> tuple[str, ...]:
    """Images the install's checks run, bundled with every release: verify's DNS pod."""
    return (str(manifests.load("verify")["dnsCheck"]["image"]),)
