"""The EL operating-system repositories of the lab's upstream stand-in (Rocky 8's BaseOS and
AppStream, CentOS 7.9's os/updates/extras, Docker CE's containerd.io, ELRepo's kernel-ml),
written as rpm-md trees under their real URL paths.

Real sites build against dl.rockylinux.org and download.docker.com, which this machine
cannot reach. ``make_el_repos(root, "el8")`` writes stand-ins of them from
``el_upstream.yaml``: one rpmbuild per repository (every package a subpackage with its own
epoch, version and release, AutoReqProv off, the real Requires/Provides/Obsoletes), the
payload taken from Debian's builds of the same programs (``apt-get download``, cached), every
rpm signed with the vendor's stand-in key (rpmsign), ``createrepo_c`` metadata in gzip
(EL7's yum reads nothing else) with comps (@core, the "Minimal Install" environment) and
AppStream's modules.yaml, ``repomd.xml.asc``, and each key at its real URL's path. For el7:
CentOS 7.9's os, updates and extras, Docker CE's el7 repository and ELRepo's kernel-ml.

The tree is ``<root>/mirror/<host><path>`` for each upstream URL; ``mirror_url`` maps an
upstream URL to where the package server serves it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit

import yaml

from kubeferry import manifests
from kubeferry.errors import InputError, OperationError
from kubeferry.lab import paths, proc
from kubeferry.lab.signing import SigningKey

DATA = Path(__file__).resolve().with_name("el_upstream.yaml")
MIRROR = "mirror"
_TIMEOUT = 600
_DEB_CACHE = "el-payload-debs"


def data() -> dict[str, Any]:
    """Every EL OS the stand-in serves (``el_upstream.yaml``)."""
    return yaml.safe_load(DATA.read_text())


def supported() -> list[str]:
    return list(data())


def mirror_path(url: str) -> str:
    """``mirror/dl.rockylinux.org/pub/rocky/8/BaseOS/x86_64/os`` for that upstream URL."""
    parts = urlsplit(url)
    return f"{MIRROR}/{parts.netloc}{parts.path}".rstrip("/")


def mirror_sources(os_name: str, base_url: str) -> dict[str, str]:
    """The ``--sources`` repository entries (name -> URL) that point at the stand-in."""
    spec = _os(os_name)
    entries = {name: repo["url"] for name, repo in spec["repositories"].items()}
    entries.update({key["source"]: key["url"] for key in spec["keys"].values()})
    return {name: f"{base_url.rstrip('/')}/{mirror_path(url)}" for name, url in entries.items()}


@dataclass
class RpmPackage:
    """One package of a stand-in repository, as ``el_upstream.yaml`` describes it."""

    name: str
    version: str
    release: str
    arch: str = "x86_64"
    epoch: int | None = None
    requires: list[str] = field(default_factory=list)
    provides: list[str] = field(default_factory=list)
    obsoletes: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    files: dict[str, dict[str, str]] = field(default_factory=dict)
    dirs: list[str] = field(default_factory=list)
    pre: str | None = None  # the %pre scriptlet (haproxy's user)
    posttrans: str | None = None  # the %posttrans scriptlet (kernel-ml's grubby call)
    module: str | None = None

    @classmethod
    def from_yaml(cls, entry: dict[str, Any]) -> RpmPackage:
        version, _, release = str(entry["version"]).rpartition("-")
        return cls(name=entry["name"], version=version, release=release,
                   arch=entry.get("arch", "x86_64"), epoch=entry.get("epoch"),
                   requires=[str(r) for r in entry.get("requires", [])],
                   provides=[str(p) for p in entry.get("provides", [])],
                   obsoletes=list(entry.get("obsoletes", [])),
                   conflicts=list(entry.get("conflicts", [])),
                   files=dict(entry.get("files") or {}), dirs=list(entry.get("dirs", [])),
                   pre=entry.get("pre"), posttrans=entry.get("posttrans"),
                   module=entry.get("module"))

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}-{self.release}.{self.arch}.rpm"

    @property
    def nevra(self) -> str:
        return f"{self.name}-{self.epoch or 0}:{self.version}-{self.release}.{self.arch}"


def packages(os_name: str, repo: str) -> list[RpmPackage]:
    return [RpmPackage.from_yaml(e) for e in _os(os_name)["repositories"][repo]["packages"]]


def _os(os_name: str) -> dict[str, Any]:
    known = data()
    if os_name not in known:
        raise InputError(f"the lab's EL upstream serves {', '.join(known)}, not {os_name!r}")
    return known[os_name]


def _run(argv: list[str], what: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    if cwd is not None:
        argv = ["sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", str(cwd), *argv]
    try:
        return proc.run(argv, timeout=_TIMEOUT)
    except OperationError as error:
        raise OperationError(f"{what}: {error}") from None


# -- payload: Debian's builds of the programs ------------------------------------------------


def payload_debs(names: Iterable[str], cache: Path | None = None) -> dict[str, Path]:
    """Debian's .deb of each package ``names``, downloaded once into the lab cache."""
    directory = (cache or paths.cache_dir()) / _DEB_CACHE
    directory.mkdir(parents=True, exist_ok=True)
    wanted = sorted(set(names))
    with open(directory / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        missing = [n for n in wanted if not list(directory.glob(f"{n}_*.deb"))]
        if missing:
            with tempfile.TemporaryDirectory(dir=directory) as tmp:
                os.chmod(tmp, 0o755)  # apt's _apt user writes here
                _run(["apt-get", "download", "-q", *missing], "downloading Debian's "
                     + ", ".join(missing) + " (the EL stand-in's payload)", cwd=Path(tmp))
                for deb in Path(tmp).glob("*.deb"):
                    os.replace(deb, directory / deb.name)
        found = {}
        for name in wanted:
            debs = sorted(directory.glob(f"{name}_*.deb"), key=lambda p: p.stat().st_mtime)
            if not debs:
                raise OperationError(f"apt-get download {name} left no .deb in {directory}")
            found[name] = debs[-1]
        return found


def _extract(debs: dict[str, Path], work: Path) -> dict[str, Path]:
    trees = {}
    for name, deb in debs.items():
        tree = work / "debs" / name
        tree.mkdir(parents=True)
        _run(["dpkg-deb", "-x", str(deb), str(tree)], f"extracting {deb.name}")
        trees[name] = tree
    return trees


# -- one repository ---------------------------------------------------------------------------

_SPEC_HEAD = """\
%define __os_install_post %{nil}
%define _build_id_links none
%define debug_package %{nil}
%define _binary_payload w9.gzdio
%define _binary_filedigest_algorithm 8
Name: kubeferry-lab-REPO
Version: 1
Release: 1
Summary: kubeferry lab stand-in repository REPO
License: various
%description
The packages of the kubeferry lab's stand-in of REPO.
"""


def _spec(repo: str, items: list[RpmPackage], trees: dict[str, Path], work: Path) -> str:
    parts = [_SPEC_HEAD.replace("REPO", repo)]
    install = ["%install", "mkdir -p %{buildroot}"]
    files = []
    for package in items:
        lines = [f"%package -n {package.name}"]
        if package.epoch is not None:
            lines.append(f"Epoch: {package.epoch}")
        lines += [f"Version: {package.version}", f"Release: {package.release}",
                  f"Summary: {package.name} (kubeferry lab stand-in)", "AutoReqProv: no"]
        if package.arch == "noarch":
            lines.append("BuildArch: noarch")
        for tag, values in (("Requires", package.requires), ("Provides", package.provides),
                            ("Obsoletes", package.obsoletes), ("Conflicts", package.conflicts)):
            lines += [f"{tag}: {value}" for value in values]
        lines += [f"%description -n {package.name}",
                  f"Stand-in of {package.name} for the kubeferry air-gap lab.", ""]
        for scriptlet, body in (("pre", package.pre), ("posttrans", package.posttrans)):
            if body:
                lines += [f"%{scriptlet} -n {package.name}", body.rstrip(), ""]
        parts.append("\n".join(lines))
        for directory in package.dirs:
            install.append(f"mkdir -p %{{buildroot}}{directory}")
        for target, source in package.files.items():
            if "text" in source:  # a file of the real package (unit, sysconfig), as data
                origin = work / "text" / package.name / target.lstrip("/")
                origin.parent.mkdir(parents=True, exist_ok=True)
                origin.write_text(source["text"])
                install.append(f"install -D -m 644 {origin} %{{buildroot}}{target}")
                continue
            origin = trees[source["deb"]] / source.get("from", target).lstrip("/")
            if not origin.exists():
                raise OperationError(f"el_upstream.yaml: {package.name} {target}: Debian's "
                                     f"{source['deb']} has no {source.get('from', target)}")
            install.append(f"install -D -m {origin.stat().st_mode & 0o7777:o} {origin} "
                           f"%{{buildroot}}{target}")
        listed = [f"%config(noreplace) {p}" if p.startswith("/etc/") else p for p in package.files]
        listed += [f"%dir {d}" for d in package.dirs]
        files.append("\n".join([f"%files -n {package.name}", *listed, ""]))
    return "\n".join([*parts, "\n".join(install), "", *files])


def build_repo_rpms(os_name: str, repo: str, out_dir: Path) -> list[Path]:
    """The repository's rpms under ``out_dir/Packages`` (one rpmbuild, many subpackages)."""
    items = packages(os_name, repo)
    debs = payload_debs({f["deb"] for p in items for f in p.files.values() if "deb" in f})
    target = out_dir / "Packages"
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kubeferry-lab-el-") as tmp:
        work = Path(tmp)
        spec_file = work / f"{repo}.spec"
        spec_file.write_text(_spec(repo, items, _extract(debs, work), work))
        rpmdir = work / "rpms"
        _run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {work}/top",
              "--define", f"_rpmdir {rpmdir}",
              "--define", "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm",
              str(spec_file)], f"building the stand-in {repo} packages")
        built = []
        for package in items:
            shutil.move(str(rpmdir / package.filename), target / package.filename)
            built.append(target / package.filename)
    return built


def comps_xml(os_name: str) -> str:
    """The @core group (kubeferry's minimal-node base names, manifests/packages.yaml) and the
    "Minimal Install" environment, as comps.xml spells them."""
    base = manifests.load("packages")["oses"][os_name]["base"]
    names = "".join(f'      <packagereq type="mandatory">{n}</packagereq>\n' for n in base)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<!DOCTYPE comps PUBLIC "-//Red Hat, Inc.//DTD Comps info//EN" "comps.dtd">\n'
            "<comps>\n  <group>\n    <id>core</id>\n    <name>Core</name>\n"
            "    <description>Smallest possible installation</description>\n"
            "    <default>false</default>\n    <uservisible>false</uservisible>\n"
            f"    <packagelist>\n{names}    </packagelist>\n  </group>\n"
            "  <environment>\n    <id>minimal-environment</id>\n    <name>Minimal Install</name>\n"
            "    <description>Basic functionality.</description>\n"
            "    <display_order>99</display_order>\n"
            "    <grouplist>\n      <groupid>core</groupid>\n    </grouplist>\n"
            "  </environment>\n</comps>\n")


def modules_yaml(os_name: str, repo: str) -> str | None:
    """modules.yaml for the repository's module streams (their defaults enabled), or None."""
    spec = _os(os_name)["repositories"][repo]
    streams = spec.get("modules") or {}
    if not streams:
        return None
    documents = []
    for module, info in streams.items():
        artifacts = [p.nevra for p in packages(os_name, repo) if p.module == module]
        documents.append({"document": "modulemd", "version": 2, "data": {
            "name": module, "stream": str(info["stream"]), "version": int(info["version"]),
            "context": str(info["context"]), "arch": "x86_64",
            "summary": f"{module} (kubeferry lab stand-in)", "description": "stand-in",
            "license": {"module": ["MIT"]}, "artifacts": {"rpms": artifacts}}})
        if info.get("default"):
            documents.append({"document": "modulemd-defaults", "version": 1,
                              "data": {"module": module, "stream": str(info["stream"])}})
    return yaml.safe_dump_all(documents, explicit_start=True, sort_keys=False) + "...\n"


def _write_repo(os_name: str, repo: str, directory: Path, key: SigningKey) -> None:
    rpms = build_repo_rpms(os_name, repo, directory)
    key.sign_rpms(rpms)
    argv = ["createrepo_c", "--quiet", "--general-compress-type=gz"]
    if _os(os_name)["repositories"][repo].get("comps"):
        comps = directory / "comps.xml"
        comps.write_text(comps_xml(os_name))
        argv += ["--groupfile", str(comps)]
    _run([*argv, str(directory)], f"the stand-in {repo} repository")
    modules = modules_yaml(os_name, repo)
    if modules is not None:
        source = directory / "modules.yaml"
        source.write_text(modules)
        _run(["modifyrepo_c", "--mdtype=modules", "--compress-type=gz", str(source),
              str(directory / "repodata")], f"the stand-in {repo} modules")
        source.unlink()
    repomd = directory / "repodata" / "repomd.xml"
    key.detach_sign(repomd, repomd.with_name("repomd.xml.asc"))


def recipe_digest(os_name: str) -> str:
    """A hash of everything that shapes the OS's stand-in repositories (the cache key)."""
    parts = [DATA.read_bytes(), Path(__file__).read_bytes(), comps_xml(os_name).encode()]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def cached_el_repos(os_name: str, cache: Path | None = None) -> Path:
    """The OS's stand-in tree (``mirror/...``), built once into the lab cache and reused:
    rpmbuild, rpmsign and createrepo_c take half a minute, and nothing in it depends on the
    Kubernetes release."""
    cache = cache or paths.cache_dir()
    target = cache / f"el-upstream-{os_name}-{recipe_digest(os_name)}"
    if (target / MIRROR).is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "el-upstream.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / MIRROR).is_dir():
            return target
        for old in [*cache.glob(f"el-upstream-{os_name}-*"),
                    *cache.glob(f".el-upstream-{os_name}.partial-*")]:  # older or interrupted
            shutil.rmtree(old, ignore_errors=True)
        partial = cache / f".el-upstream-{os_name}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        make_el_repos(partial, os_name)
        os.replace(partial, target)
    return target


def add_el_repos(root: Path, os_name: str) -> None:
    """Put the OS's (cached) stand-in repositories into the served tree ``root``."""
    source = cached_el_repos(os_name) / MIRROR
    for directory, _dirs, names in os.walk(source):
        relative = Path(directory).relative_to(source)
        (root / MIRROR / relative).mkdir(parents=True, exist_ok=True)
        for name in names:
            target = root / MIRROR / relative / name
            if target.exists():
                continue
            try:
                os.link(Path(directory) / name, target)
            except OSError:  # another file system
                shutil.copy2(Path(directory) / name, target)


def make_el_repos(root: Path, os_name: str) -> list[Path]:
    """Write the OS's stand-in repositories and keys under ``root``; returns the repositories."""
    spec = _os(os_name)
    written = []
    keys = {name: SigningKey(info["uid"]) for name, info in spec["keys"].items()}
    try:
        for key in keys.values():
            key.__enter__()
        for name, info in spec["keys"].items():
            target = root / mirror_path(info["url"])
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(keys[name].public)
        for repo, info in spec["repositories"].items():
            directory = root / mirror_path(info["url"])
            partial = directory.with_name(f".{directory.name}.partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            _write_repo(os_name, repo, partial, keys[info["key"]])
            if directory.exists():
                shutil.rmtree(directory)
            os.replace(partial, directory)
            written.append(directory)
    finally:
        for key in keys.values():
            key.close()
    return written
