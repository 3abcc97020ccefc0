"""Per-OS package data from ``manifests/packages.yaml`` and loading each upstream repository.

Loading a repository means: its index (repomd.xml / InRelease, fetched fresh), the
metadata files it names (cached by checksum), parsed into packages of the target arch.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubeferry import manifests
from kubeferry.bundler.aptmeta import (
    dearmor,
    packages_stanzas,
    parse_packages,
    parse_release,
    verify_inrelease,
)
from kubeferry.bundler.fetch import Fetcher
from kubeferry.bundler.pkgmodel import Package
from kubeferry.bundler.rpmmd import (
    RPM_ARCHES,
    MetadataError,
    ModuleFilter,
    RepomdEntry,
    parse_modules,
    parse_primary,
    parse_repomd,
    primary_entries,
    scan_filelists,
)
from kubeferry.bundler.sources import Sources
from kubeferry.errors import InputError, OperationError

RPM_MD = "rpm-md"
APT_FLAT = "apt-flat"


@dataclass(frozen=True)
class RepoSpec:
    """How to read one upstream repository (see the header of manifests/packages.yaml)."""

    name: str
    source: str
    base: bool = False
    keys: tuple[str, ...] = ()
    arches: tuple[str, ...] = ()
    suite: str = ""
    components: tuple[str, ...] = ()
    flat: bool = False

    @classmethod
    def from_yaml(cls, data: dict[str, Any]) -> RepoSpec:
        return cls(name=data["name"], source=data.get("source", data["name"]),
                   base=bool(data.get("base", False)), keys=tuple(data.get("keys", ())),
                   arches=tuple(data.get("arches", ())), suite=data.get("suite", ""),
                   components=tuple(data.get("components", ())), flat=bool(data.get("flat")))


@dataclass(frozen=True)
class KernelSpec:
    repository: RepoSpec
    package: str
    version: str
    default: bool


@dataclass(frozen=True)
class OsSpec:
    """Everything packages.yaml says about one OS."""

    name: str
    description: str
    format: str  # RPM_MD or APT_FLAT
    arches: tuple[str, ...]
    repositories: tuple[RepoSpec, ...]
    base: tuple[str, ...]
    base_priority: str
    packages: tuple[str, ...]
    pinned: tuple[str, ...]
    releasever: str = ""
    kernel: KernelSpec | None = None
    admin: tuple[str, ...] = ()  # a Python for kubeferry.pyz on the admin host, never on nodes

    @property
    def family(self) -> str:
        return "rpm" if self.format == RPM_MD else "deb"

    def repositories_for(self, arch: str) -> list[RepoSpec]:
        return [r for r in self.repositories if not r.arches or arch in r.arches]


def supported_oses() -> list[str]:
    """The OSes a bundle can carry packages for, in manifest order."""
    return list(manifests.load("packages")["oses"])


def os_spec(os_name: str) -> OsSpec:
    """The package data of ``os_name``; InputError naming the choices if unknown."""
    data = manifests.load("packages")
    row = data["oses"].get(os_name)
    if row is None:
        raise InputError(f"--os {os_name!r} is not supported: choose one of "
                         + ", ".join(supported_oses()))
    kernel = None
    if row.get("kernel"):
        k = row["kernel"]
        kernel = KernelSpec(repository=RepoSpec.from_yaml(k["repository"]), package=k["package"],
                            version=str(k["version"]), default=bool(k.get("default", False)))
    return OsSpec(
        name=os_name, description=row.get("description", os_name), format=row["format"],
        arches=tuple(row.get("arches", ("amd64", "arm64"))),
        repositories=tuple(RepoSpec.from_yaml(r) for r in row["repositories"]),
        base=tuple(row.get("base", ())), base_priority=row.get("base_priority", ""),
        packages=tuple(row["packages"]), pinned=tuple(data.get("kubernetes_pinned", ())),
        releasever=str(row.get("releasever", "")), kernel=kernel,
        admin=tuple(row.get("admin", ())),
    )


def kernel_default(os_name: str) -> bool:
    """Whether ``--include`` bundles the kernel by default for this OS (el7: yes)."""
    spec = os_spec(os_name)
    return bool(spec.kernel and spec.kernel.default)


def source_url(sources: Sources, key: str, what: str) -> str:
    url = sources.repositories.get(key)
    if not url:
        raise InputError(f"{what}: no URL for {key!r} in the sources; add "
                         f"'repositories: {{{key}: URL}}' to --sources")
    return url.rstrip("/")


def join_url(base: str, path: str) -> str:
    if path.startswith(("http://", "https://")):
        return path
    while path.startswith("./"):
        path = path[2:]
    return f"{base.rstrip('/')}/{path.lstrip('/')}"


@dataclass
class Key:
    """A GPG key that signs a repository: where it came from and where it is cached."""

    name: str
    url: str
    path: Path
    armored: bool

    @property
    def filename(self) -> str:
        return f"{self.name}.{'asc' if self.armored else 'gpg'}"


def fetch_key(name: str, sources: Sources, fetcher: Fetcher) -> Key:
    url = source_url(sources, name, f"GPG key {name}")
    data = fetcher.get_bytes(url, f"GPG key {name}", limit=1 << 20)
    armored = data.lstrip().startswith(b"-----BEGIN PGP")
    if not armored and (not data or not data[0] & 0x80):
        raise OperationError(f"GPG key {name}: {url} is not an OpenPGP key")
    return Key(name=name, url=url, path=fetcher.put_bytes(data), armored=armored)


@dataclass
class LoadedRepo:
    """One upstream repository's packages for the target arch, and how to get more."""

    spec: RepoSpec
    url: str  # the repository base URL (apt: the archive root for dists/ repositories)
    packages: list[Package]
    format: str
    modules: ModuleFilter | None = None
    signature: str = "none"  # apt: "verified <fingerprints>" or "none"
    primary: Path | None = None  # rpm: cached primary metadata
    repomd: dict[str, RepomdEntry] = field(default_factory=dict)
    indexes: list[Path] = field(default_factory=list)  # apt: cached Packages indexes
    fetcher: Fetcher | None = None

    def package_url(self, package: Package) -> str:
        return join_url(self.url, package.location)

    def file_owners(self, paths: set[str]) -> dict[str, list[Package]]:
        """rpm: owners of ``paths`` per filelists.xml (fetched on first use)."""
        entry = self.repomd.get("filelists")
        if entry is None or self.fetcher is None:
            return {}
        where = f"repository {self.spec.name}"
        cached = self.fetcher.fetch(join_url(self.url, entry.href), entry.checksum, where,
                                    entry.size)
        by_id = {p.checksum[1]: p for p in self.packages}
        owners: dict[str, list[Package]] = {}
        for pkgid, hits in scan_filelists(cached, paths, where).items():
            package = by_id.get(pkgid)
            if package is not None:
                for path in hits:
                    owners.setdefault(path, []).append(package)
        return owners

    def primary_elements(self, packages: list[Package]) -> dict[str, ET.Element]:
        wanted = {p.checksum[1] for p in packages}
        assert self.primary is not None
        return primary_entries(self.primary, wanted, f"repository {self.spec.name}")

    def stanzas(self, packages: list[Package]) -> dict[tuple[str, str, str], str]:
        wanted = {(p.name, p.version, p.arch) for p in packages}
        found: dict[tuple[str, str, str], str] = {}
        for index in self.indexes:
            found.update(packages_stanzas(index, wanted - set(found)))
        return found


def load_rpm_repo(spec: RepoSpec, url: str, arch: str, fetcher: Fetcher) -> LoadedRepo:
    where = f"repository {spec.name} ({url})"
    repomd = parse_repomd(fetcher.get_bytes(join_url(url, "repodata/repomd.xml"), where), where)
    primary = repomd["primary"]
    primary_path = fetcher.fetch(join_url(url, primary.href), primary.checksum, where,
                                 primary.size)
    packages = parse_primary(primary_path, spec.name, RPM_ARCHES[arch], where)
    modules = None
    if "modules" in repomd:
        entry = repomd["modules"]
        modules = parse_modules(fetcher.fetch(join_url(url, entry.href), entry.checksum, where,
                                              entry.size), where)
    return LoadedRepo(spec=spec, url=url, packages=packages, format=RPM_MD, modules=modules,
                      primary=primary_path, repomd=repomd, fetcher=fetcher)


def load_apt_repo(spec: RepoSpec, url: str, arch: str, fetcher: Fetcher,
                  keys: list[Key]) -> LoadedRepo:
    where = f"repository {spec.name} ({url})"
    release_dir = url if spec.flat else join_url(url, f"dists/{spec.suite}")
    signature = "none"
    if keys:
        inrelease = fetcher.get_bytes(join_url(release_dir, "InRelease"), where)
        signed = fetcher.put_bytes(inrelease)
        keyrings = [fetcher.put_bytes(dearmor(key.path.read_bytes())) for key in keys]
        signature = "verified " + ",".join(verify_inrelease(signed, keyrings, where))
        text = inrelease.decode("utf-8", errors="replace")
    else:
        try:
            text = fetcher.get_bytes(join_url(release_dir, "InRelease"), where).decode(
                "utf-8", errors="replace")
        except OperationError:
            text = fetcher.get_bytes(join_url(release_dir, "Release"), where).decode(
                "utf-8", errors="replace")
    release = parse_release(text, where)
    prefixes = [""] if spec.flat else [f"{c}/binary-{arch}/" for c in spec.components]
    packages: list[Package] = []
    indexes: list[Path] = []
    for prefix in prefixes:
        found = release.packages_index(prefix)
        if found is None:
            raise MetadataError(f"{where}: Release lists no {prefix}Packages index")
        path, digest, size = found
        cached = fetcher.fetch(join_url(release_dir, path), ("sha256", digest), where, size)
        indexes.append(cached)
        packages.extend(parse_packages(cached, spec.name, (arch,), where))
    return LoadedRepo(spec=spec, url=url, packages=packages, format=APT_FLAT,
                      signature=signature, indexes=indexes, fetcher=fetcher)
