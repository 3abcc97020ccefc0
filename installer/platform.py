"""The node OS a bundle is for, and what differs between OS families (data: nodeprep.yaml).

Phases pick their command paths from the bundle's OS (``ctx.bundle.os``), never from the
node: preflight refuses a node whose OS is not the bundle's, so both always agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubeferry import manifests
from kubeferry.errors import InputError


def data() -> dict[str, Any]:
    """The node preparation data (manifests/nodeprep.yaml)."""
    return manifests.load("nodeprep")


@dataclass(frozen=True)
class Platform:
    os: str  # the bundle's OS: el7, el8, el9, ubuntu2004, ubuntu2204, debian12
    family: str  # rpm or deb
    ids: tuple[str, ...]
    version: str
    major_only: bool
    packager: str  # yum, dnf or apt-get
    chrony: dict[str, str]

    @property
    def is_rpm(self) -> bool:
        return self.family == "rpm"

    def matches(self, os_release: dict[str, str]) -> bool:
        """Does a node's /etc/os-release describe this OS?"""
        words = {os_release.get("ID", "").lower(), *os_release.get("ID_LIKE", "").lower().split()}
        version = os_release.get("VERSION_ID", "")
        if self.major_only:
            version = version.split(".", 1)[0]
        return bool(words & set(self.ids)) and version == self.version

    def uname_arch(self, arch: str) -> str:
        """``x86_64`` for the bundle arch ``amd64``."""
        return str(data()["arches"].get(arch, arch))


def platform(os_name: str) -> Platform:
    """The Platform for a bundle OS; InputError for one kubeferry cannot prepare."""
    oses = data()["oses"]
    if os_name not in oses:
        raise InputError(f"bundle OS {os_name!r}: the installer prepares {', '.join(oses)}")
    spec = oses[os_name]
    return Platform(os=os_name, family=spec["family"], ids=tuple(spec["ids"]),
                    version=str(spec["version"]), major_only=bool(spec.get("major_only")),
                    packager=spec.get("packager", "apt-get"), chrony=dict(spec["chrony"]))


def describe(os_release: dict[str, str]) -> str:
    """``debian 12`` from /etc/os-release (``?`` when unreadable)."""
    if not os_release:
        return "?"
    return f"{os_release.get('ID', '?')} {os_release.get('VERSION_ID', '?')}"
