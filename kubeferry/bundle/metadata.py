"""The metadata member (``kubeferry-bundle.json``) as a model: assembled once for the
writer, checked once for every reader.

Entries stay JSON-shaped dicts (``MemberEntry``, ``ImageEntry`` name their keys), so the
metadata a reader gets is byte for byte what the build wrote, unknown keys included; the
image set recorded at build time is a typed ``RecordedImages``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from kubeferry.bundle.errors import CorruptBundle, NotABundle
from kubeferry.bundle.format import (
    FORMAT,
    FORMAT_VERSION,
    METADATA_NAME,
    SELF_CHECK,
    members_digest,
    metadata_self_check,
)
from kubeferry.errors import InputError
from kubeferry.versions import ImageSet as ReleaseImages
from kubeferry.versions import parse_release

MAX_METADATA_BYTES = 64 << 20


class MemberEntry(TypedDict):
    """One member as the metadata lists it, in file order."""

    path: str
    size: int
    sha256: str  # hex


class ImageEntry(TypedDict, total=False):
    """One image of the bundle's OCI layout."""

    name: str  # the full upstream name, registry.k8s.io/kube-apiserver:v1.25.0
    digest: str  # of the manifest as stored in the bundle
    upstreamDigest: str  # of the single-platform manifest upstream
    indexDigest: str | None  # of the upstream index it was picked from
    platform: dict[str, str]
    size: int
    layers: int
    mediaType: str


@dataclass(frozen=True)
class RecordedImages:
    """The image set recorded at build time (``imageSet``): what the bundle's release needs,
    as the kubeferry that built it knew it. Installers read it from here, not from their
    own manifests, so a bundle from another kubeferry installs the images it carries."""

    kubeadm_repository: str = ""
    pause: str = ""
    pause_image: str = ""
    etcd: str = ""
    coredns: str = ""
    calico: str = ""
    kubeadm_images: tuple[str, ...] = ()
    calico_images: tuple[str, ...] = ()
    check_images: tuple[str, ...] = ()
    kubernetes: str = ""  # the bundle's release (metadata ``kubernetes``), 1.25.0

    @property
    def tag(self) -> str:
        """``v1.25.0``: the control-plane images' tag, kubeadm's kubernetesVersion."""
        return f"v{self.kubernetes}"

    @classmethod
    def of_release(cls, images: ReleaseImages) -> RecordedImages:
        return cls(images.kubeadm_repository, images.pause, images.pause_image, images.etcd,
                   images.coredns, images.calico, tuple(images.kubeadm_images),
                   tuple(images.calico_images), tuple(images.check_images), images.kubernetes)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, kubernetes: str = "") -> RecordedImages:
        """The recorded set of a bundle of ``kubernetes``; fields an older bundle lacks stay empty."""
        data = data or {}
        return cls(
            kubernetes=kubernetes,
            kubeadm_repository=data.get("kubeadmRepository", ""), pause=data.get("pause", ""),
            pause_image=data.get("pauseImage", ""), etcd=data.get("etcd", ""),
            coredns=data.get("coredns", ""), calico=data.get("calico", ""),
            kubeadm_images=tuple(data.get("kubeadmImages", ())),
            calico_images=tuple(data.get("calicoImages", ())),
            check_images=tuple(data.get("checkImages", ())),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kubeadmRepository": self.kubeadm_repository,
            "pause": self.pause,
            "pauseImage": self.pause_image,
            "etcd": self.etcd,
            "coredns": self.coredns,
            "calico": self.calico,
            "kubeadmImages": list(self.kubeadm_images),
            "calicoImages": list(self.calico_images),
            "checkImages": list(self.check_images),
        }


def assemble(fields: dict[str, Any], members: list[MemberEntry]) -> dict[str, Any]:
    """The whole metadata of a bundle: format, ``fields``, the member list, its aggregate
    digest and, last, the self-check over all of it."""
    metadata = {
        "format": FORMAT,
        "formatVersion": FORMAT_VERSION,
        **fields,
        "members": members,
        "membersDigest": members_digest(members),
    }
    metadata.pop(SELF_CHECK, None)
    metadata[SELF_CHECK] = metadata_self_check(metadata)
    return metadata


def parse(raw: bytes, path: Path) -> dict[str, Any]:
    """The metadata in ``raw``, checked: format, version, self-check, member list and the
    fields readers use; NotABundle or CorruptBundle in one line naming ``path``."""
    try:
        metadata = json.loads(raw)
    except ValueError:
        raise CorruptBundle(f"{path}: {METADATA_NAME} is damaged") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise NotABundle(f"{path}: not a kubeferry bundle ({METADATA_NAME} has no format)")
    version = metadata.get("formatVersion")
    if not isinstance(version, int) or isinstance(version, bool):
        raise NotABundle(f"{path}: {METADATA_NAME} has formatVersion {version!r}, not a number"
                         " (damaged, or not written by kubeferry)")
    if version != FORMAT_VERSION:
        raise NotABundle(
            f"{path}: bundle format {version} is not readable by this"
            f" kubeferry (reads {FORMAT_VERSION}); use a matching kubeferry"
        )
    recorded = metadata.get(SELF_CHECK)
    if recorded is not None and recorded != metadata_self_check(metadata):
        raise CorruptBundle(f"{path}: {METADATA_NAME} was changed after the build (its {SELF_CHECK}"
                            " does not match; tampered or damaged)")
    members = metadata.get("members")
    if not isinstance(members, list) or not all(_plausible_member(m) for m in members):
        raise CorruptBundle(f"{path}: {METADATA_NAME} has no valid member list")
    if members_digest(members) != metadata.get("membersDigest"):
        raise CorruptBundle(f"{path}: the member list does not match its digest (tampered?)")
    _check_fields(metadata, path)
    return metadata


def _check_fields(metadata: dict[str, Any], path: Path) -> None:
    """The fields readers use must have their types, so no reader trips over them later."""
    for key in ("os", "arch"):
        if not isinstance(metadata.get(key), str) or not metadata[key]:
            raise CorruptBundle(f"{path}: {METADATA_NAME} has no valid {key!r}")
    try:
        metadata["kubernetes"] = parse_release(metadata.get("kubernetes"), f"{METADATA_NAME} kubernetes")
    except InputError as error:
        raise CorruptBundle(f"{path}: {error}") from None
    images = metadata.get("images", [])
    if not isinstance(images, list) or not all(
        isinstance(i, dict) and isinstance(i.get("name"), str) and isinstance(i.get("digest"), str)
        and _count(i.get("size", 0)) for i in images
    ):
        raise CorruptBundle(f"{path}: {METADATA_NAME} has no valid image list")
    include = metadata.get("include", [])
    if not isinstance(include, list) or not all(isinstance(name, str) for name in include):
        raise CorruptBundle(f"{path}: {METADATA_NAME} has no valid 'include' list")
    for section in ("kubeferry", "packages", "kernel", "files", "sources", "imageSet"):
        if metadata.get(section) is not None and not isinstance(metadata[section], dict):
            raise CorruptBundle(f"{path}: {METADATA_NAME} has an invalid {section!r} section")


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _plausible_member(member: object) -> bool:
    """A member entry: a string path, a byte count, a sha256 in hex."""
    return (isinstance(member, dict) and isinstance(member.get("path"), str)
            and _count(member.get("size")) and isinstance(member.get("sha256"), str)
            and len(member["sha256"]) == 64 and all(c in "0123456789abcdef" for c in member["sha256"]))
