"""The package side of ``bundle build``: OS repositories and kernel-ml as bundle content.

``build_packages`` reads the OS's upstream repositories (URLs from the effective sources),
computes the set a minimal node already has, resolves the package set relative to it,
downloads every package (verified against the metadata checksum, into the cache) and
writes one self-contained repository per content kind:

- ``packages/<os>/``: rpm-md (``Packages/``, ``repodata/``) or flat apt (``pool/``,
  ``Packages``, ``Packages.gz``, ``Release``), with the upstream GPG keys under ``keys/``;
- ``kernel/<os>/`` (EL7, ``include_kernel``): ELRepo kernel-ml and whatever it needs beyond
  the base set and the packages repository, as its own rpm-md repository.

The metadata each Content carries is what the installer and ``bundle inspect`` read.
docs/packages.md describes the rules and the repository layout.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

from kubeferry.bundler.content import Content, Member
from kubeferry.bundler.fetch import Fetcher
from kubeferry.bundler.pkgmodel import Package
from kubeferry.bundler.repo_writer import Bundled, pool_names, write_apt_repo, write_rpm_repo
from kubeferry.bundler.repositories import (
    RPM_MD,
    Key,
    LoadedRepo,
    OsSpec,
    RepoSpec,
    fetch_key,
    load_apt_repo,
    load_rpm_repo,
    os_spec,
    source_url,
    supported_oses,
)
from kubeferry.bundler.resolver import Pin, Resolution, Resolver, Universe
from kubeferry.bundler.sources import Sources
from kubeferry.errors import InputError

__all__ = ["build_packages", "inspect_lines", "installed_set", "kubernetes_pins",
           "load_repositories", "os_spec", "supported_oses", "universe_of"]

Progress = Callable[[int], None]  # bytes just downloaded
DOWNLOAD_WORKERS = 4


def load_repositories(specs: list[RepoSpec], spec: OsSpec, arch: str, sources: Sources,
                      fetcher: Fetcher, keys: dict[str, Key]) -> list[LoadedRepo]:
    """Each repository's metadata, checked against its keys (fetched into ``keys`` once).

    With ``universe_of``, ``installed_set`` and ``kubernetes_pins`` this is the resolve-only
    seam: what a build would bundle, without downloading a package.
    """
    loaded = []
    for repo in specs:
        url = source_url(sources, repo.source, f"repository {repo.name}")
        for key_name in repo.keys:
            if key_name not in keys:
                keys[key_name] = fetch_key(key_name, sources, fetcher)
        if spec.format == RPM_MD:
            loaded.append(load_rpm_repo(repo, url, arch, fetcher))
        else:
            loaded.append(load_apt_repo(repo, url, arch, fetcher,
                                        [keys[name] for name in repo.keys]))
    return loaded


def universe_of(spec: OsSpec, repos: list[LoadedRepo]) -> Universe:
    """Every package a stock node's package manager would see (modular filtering applied)."""
    modules = None
    for repo in repos:
        if repo.modules is not None:
            modules = repo.modules if modules is None else modules.merge(repo.modules)
    visible: list[Package] = []
    hidden: list[Package] = []
    for repo in repos:
        for package in repo.packages:
            (visible if modules is None or modules.visible(package) else hidden).append(package)

    def file_loader(paths: set[str]) -> dict[str, list[Package]]:
        owners: dict[str, list[Package]] = {}
        for repo in repos:
            for path, found in repo.file_owners(paths).items():
                owners.setdefault(path, []).extend(p for p in found if p in visible_set)
        return owners

    visible_set = set(visible)
    return Universe(spec.family, visible, [r.spec.name for r in repos], hidden=hidden,
                    file_loader=file_loader if spec.format == RPM_MD else None)


def installed_set(spec: OsSpec, universe: Universe, repos: list[LoadedRepo]
                  ) -> tuple[list[Package], list[str]]:
    """What a minimal node already has: the closure of the base names in the base repos.

    Debian/Ubuntu also count every package of the base priority (debootstrap minbase).
    Returns the packages and the names that could not be found (kept as warnings).
    """
    base_repos = {r.spec.name for r in repos if r.spec.base}
    names = list(spec.base)
    if spec.base_priority:
        names += sorted({p.name for p in universe.packages
                         if p.repo in base_repos and (p.priority == spec.base_priority
                                                      or p.essential)})
    missing = []
    present = []
    for name in dict.fromkeys(names):
        if any(p.repo in base_repos for p in universe.by_name.get(name, ())):
            present.append(name)
        else:
            missing.append(f"base package {name} is not in {', '.join(sorted(base_repos))}")
    resolver = Resolver(universe, lenient=True, repos=base_repos)
    resolution = resolver.resolve(present)
    return resolution.packages, missing + resolution.unsatisfied


def kubernetes_pins(spec: OsSpec, kubernetes: str) -> dict[str, Pin]:
    """The OS's pinned packages (kubeadm, kubelet, kubectl) held at ``kubernetes``."""
    pin = Pin(lambda p: p.upstream_version() == kubernetes, f"= {kubernetes}")
    return {name: pin for name in spec.pinned}


def _download(resolution: Resolution, repos: list[LoadedRepo], fetcher: Fetcher,
              ) -> list[Bundled]:
    by_name = {r.spec.name: r for r in repos}

    def one(package: Package) -> Bundled:
        repo = by_name[package.repo]
        what = f"package {package.name} {package.version} from {package.repo}"
        path = fetcher.fetch(repo.package_url(package), package.checksum, what, package.size)
        return Bundled(package=package, path=path, sha256=path.name)

    with ThreadPoolExecutor(max_workers=DOWNLOAD_WORKERS) as pool:
        return list(pool.map(one, resolution.packages))


def _write_repo(prefix: str, spec: OsSpec, arch: str, bundled: list[Bundled],
                repos: list[LoadedRepo], fetcher: Fetcher) -> list[Member]:
    by_name = {r.spec.name: r for r in repos}
    groups: dict[str, list[Package]] = {}
    for item in bundled:
        groups.setdefault(item.package.repo, []).append(item.package)
    if spec.format == RPM_MD:
        elements = {}
        for repo_name, packages in groups.items():
            elements.update(by_name[repo_name].primary_elements(packages))
        return write_rpm_repo(prefix, bundled, elements, fetcher)
    stanzas = {}
    for repo_name, packages in groups.items():
        stanzas.update(by_name[repo_name].stanzas(packages))
    return write_apt_repo(prefix, bundled, stanzas, arch, fetcher)


def _key_members(prefix: str, keys: list[Key]) -> list[Member]:
    return [Member.from_file(f"{prefix}/keys/{key.filename}", key.path, key.path.name)
            for key in keys]


def _install_spec(spec: OsSpec, package: Package) -> str:
    """How the installer names one package at its exact version (yum/dnf or apt)."""
    if spec.format == RPM_MD:
        return f"{package.name}-{package.version}"
    return f"{package.name}={package.version}"


def _package_rows(bundled: list[Bundled], prefix: str, resolution: Resolution,
                  requested: set[str], admin: set[str]) -> list[dict[str, Any]]:
    names = pool_names(bundled)
    folder = "Packages" if bundled and bundled[0].package.family == "rpm" else "pool"
    rows = []
    for item in sorted(bundled, key=lambda b: b.package.name):
        package = item.package
        row: dict[str, Any] = {"name": package.name, "version": package.version,
                               "arch": package.arch}
        if package.family == "rpm":
            evr = package.evr
            row.update(epoch=evr.epoch, ver=evr.version, release=evr.release)
        row.update(repo=package.repo, sha256=item.sha256, size=item.path.stat().st_size,
                   path=f"{prefix}/{folder}/{names[item.sha256]}",
                   requested=package.name in requested,
                   reason=resolution.reasons.get(package.name, ""))
        if package.name in admin:
            row["admin"] = True  # for the admin host's Python: the nodes' install skips it
        rows.append(row)
    return rows


def _section(spec: OsSpec, arch: str, prefix: str, repos: list[LoadedRepo], keys: list[Key],
             bundled: list[Bundled], resolution: Resolution, warnings: list[str],
             installed: list[Package], admin: Sequence[str] = ()) -> dict[str, Any]:
    by_name = {p.name: p for p in resolution.packages}
    roots = [p.name for p in resolution.packages if resolution.reasons.get(p.name) == p.name]
    admin_roots = [name for name in roots if name in admin and name not in spec.packages]
    node_roots = [name for name in roots if name not in admin_roots]
    return {
        "os": spec.name,
        "arch": arch,
        "format": spec.format,
        "path": prefix,
        "repositories": [
            {"name": r.spec.name, "url": r.url, "base": r.spec.base,
             "keys": list(r.spec.keys), "signature": r.signature,
             **({"suite": r.spec.suite, "components": list(r.spec.components)}
                if r.spec.suite else {}),
             **({"flat": True} if r.spec.flat else {})}
            for r in repos
        ],
        "keys": [{"name": k.name, "url": k.url, "path": f"{prefix}/keys/{k.filename}",
                  "sha256": k.path.name} for k in keys],
        "install": [_install_spec(spec, by_name[name]) for name in node_roots],
        "admin": [_install_spec(spec, by_name[name]) for name in admin_roots],
        "packages": _package_rows(bundled, prefix, resolution, set(node_roots), set(admin_roots)),
        "base": {"repositories": [r.spec.name for r in repos if r.spec.base],
                 "installed": len(installed)},
        "warnings": warnings + resolution.warnings,
    }


def build_packages(kubernetes: str, os_name: str, arch: str, sources: Sources, cache_dir: Path,
                   *, extra: Sequence[str] = (), include_kernel: bool = False,
                   kernel_version: str | None = None, progress: Progress | None = None,
                   packages: Sequence[str] | None = None,
                   stats: dict[str, int] | None = None, admin: bool = False) -> list[Content]:
    """The ``packages`` content (and ``kernel`` when asked) for one OS and arch.

    ``packages`` replaces the OS's default package set (tests; ``extra`` adds to either).
    ``admin``: also the OS's Python for kubeferry.pyz (packages.yaml ``admin``), for the
    admin host only.
    ``stats`` (if given) receives ``downloaded`` and ``cached`` byte counts.
    Raises InputError for an unknown OS/arch or a requested package that does not exist,
    OperationError for unreachable or corrupt repositories, a checksum mismatch, or a
    dependency no repository satisfies (naming the chain that needs it).
    """
    spec = os_spec(os_name)
    if arch not in spec.arches:
        raise InputError(f"--arch {arch}: {spec.description} packages are available for "
                         + ", ".join(spec.arches))
    if include_kernel and spec.kernel is None:
        raise InputError(f"--include kernel: kernel-ml is bundled for el7 only, not {os_name}")
    fetcher = Fetcher(cache_dir, progress=progress)
    keys: dict[str, Key] = {}
    repos = load_repositories(spec.repositories_for(arch), spec, arch, sources, fetcher, keys)
    universe = universe_of(spec, repos)
    installed, warnings = installed_set(spec, universe, repos)
    admin_names = spec.admin if admin else ()
    requested = list(dict.fromkeys([*(spec.packages if packages is None else packages), *extra,
                                    *admin_names]))
    resolution = Resolver(universe, installed=installed,
                          pins=kubernetes_pins(spec, kubernetes)).resolve(requested)
    bundled = _download(resolution, repos, fetcher)
    prefix = f"packages/{os_name}"
    used = {item.package.repo for item in bundled}
    used_keys = [keys[name] for r in repos if r.spec.name in used for name in r.spec.keys]
    used_keys = list({k.name: k for k in used_keys}.values())
    members = _write_repo(prefix, spec, arch, bundled, repos, fetcher)
    members += _key_members(prefix, used_keys)
    section = _section(spec, arch, prefix, repos, used_keys, bundled, resolution, warnings,
                       installed, admin_names)
    section["kubernetes"] = kubernetes
    if spec.format == RPM_MD:
        section["releasever"] = spec.releasever
    contents = [Content(kind="packages", members=members, metadata={"packages": section})]
    if include_kernel and spec.kernel is not None:
        contents.append(_kernel_content(spec, arch, sources, fetcher, keys, repos, installed,
                                        resolution, kernel_version or spec.kernel.version))
    if stats is not None:
        stats["downloaded"] = stats.get("downloaded", 0) + fetcher.downloaded_bytes
        stats["cached"] = stats.get("cached", 0) + fetcher.cached_bytes
    return contents


def _kernel_pin(version: str) -> Pin:
    def accepts(package: Package) -> bool:
        evr = package.evr
        return version in (package.version, evr.version, f"{evr.version}-{evr.release}")

    return Pin(accepts, f"= {version}")


def _kernel_content(spec: OsSpec, arch: str, sources: Sources, fetcher: Fetcher,
                    keys: dict[str, Key], repos: list[LoadedRepo], installed: list[Package],
                    packages: Resolution, version: str) -> Content:
    """kernel-ml and what it needs beyond the base set and the packages repository."""
    assert spec.kernel is not None
    kernel_repo = load_repositories([spec.kernel.repository], spec, arch, sources, fetcher, keys)[0]
    everything = [*repos, kernel_repo]
    universe = universe_of(spec, everything)
    already = installed + [p for p in packages.packages if p.name not in
                           {i.name for i in installed}]
    resolution = Resolver(universe, installed=already,
                          pins={spec.kernel.package: _kernel_pin(version)}).resolve(
        [spec.kernel.package])
    bundled = _download(resolution, everything, fetcher)
    prefix = f"kernel/{spec.name}"
    used = {item.package.repo for item in bundled}
    used_keys = list({name: keys[name] for r in everything if r.spec.name in used
                      for name in r.spec.keys}.values())
    members = _write_repo(prefix, spec, arch, bundled, everything, fetcher)
    members += _key_members(prefix, used_keys)
    section = _section(spec, arch, prefix, [kernel_repo], used_keys, bundled, resolution, [],
                       installed)
    section.update(package=spec.kernel.package, version=version, releasever=spec.releasever)
    return Content(kind="kernel", members=members, metadata={"kernel": section})


def inspect_lines(metadata: dict[str, Any]) -> list[str]:
    """``bundle inspect`` lines for the packages, kernel and files sections of a bundle's
    metadata: per repository path, each package with its version, arch and source
    repository (``*``: requested by name); then the pinned files."""
    lines: list[str] = []
    for kind in ("packages", "kernel"):
        section = metadata.get(kind)
        if not section:
            continue
        rows = section.get("packages", [])
        total = sum(row.get("size", 0) for row in rows)
        lines.append(f"{kind:<11} {section.get('path')} ({section.get('format')}, "
                     f"{section.get('os')} {section.get('arch')}): {len(rows)} packages, "
                     f"{total} bytes")
        name_width = max((len(row["name"]) for row in rows), default=0)
        version_width = max((len(row["version"]) for row in rows), default=0)
        for row in rows:
            mark = "*" if row.get("requested") else "a" if row.get("admin") else " "
            lines.append(f"  {mark} {row['name']:<{name_width}}  {row['version']:<{version_width}}"
                         f"  {row['arch']:<7} {row['repo']}")
        keys = ", ".join(key["name"] for key in section.get("keys", []))
        if keys:
            lines.append(f"    keys: {keys}")
        for warning in section.get("warnings", []):
            lines.append(f"    warning: {warning}")
        if section.get("admin"):
            lines.append(f"    a: for an admin host without Python 3.9+ ({', '.join(section['admin'])});"
                         " README: Inside the air gap")
    files = (metadata.get("files") or {}).get("files", [])
    if files:
        lines.append(f"files       {len(files)} pinned (calico {metadata['files'].get('calico')})")
        for row in files:
            lines.append(f"    {row['path']}  {row['size']} bytes  sha256:{row['sha256'][:16]}")
    return lines
