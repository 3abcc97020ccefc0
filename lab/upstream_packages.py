"""The internet's package repositories and pinned files, stood in for by one directory tree.

``make_tree(root, "1.25.0")`` writes what the lab's package server serves on loopback:

- ``core:/stable:/v1.25/deb/``: a stand-in of pkgs.k8s.io's flat apt repository for the
  minor, as pkgs.k8s.io lays it out (``InRelease`` clearsigned, ``Release`` + ``Release.gpg``,
  ``Packages`` + ``Packages.gz``, ``Release.key``, the debs under ``amd64/``), holding the
  lab's stand-in kubeadm/kubelet/kubectl/cri-tools/kubernetes-cni (``lab/standin_packages``);
- ``core:/stable:/v1.25/rpm/``: the same as a yum repository (signed rpms under
  ``x86_64/``, ``repodata/`` by createrepo_c with gzip for EL7's yum, ``repomd.xml.asc``,
  ``repodata/repomd.xml.key``);
- ``files/<host>/<path>``: each pinned file of the release at its upstream URL's path
  (calico.yaml), copied from ``reference_dir()`` and checked against kubeferry's pin;
- ``keys/debian-archive-keyring.gpg``: Debian's archive keys from this machine's
  debian-archive-keyring package (ftp-master.debian.org, where the default sources fetch
  them, is not reachable from the lab machine; the keys are the same).

- ``mirror/<host>/<path>`` (``oses``): an EL OS's own repositories and keys, stood in by
  ``lab/el_upstream.py`` (Rocky 8's BaseOS/AppStream and Docker CE for el8).

Everything else (Debian's own archive) stays the real one: ``lab_sources`` returns the
``--sources`` document that points a build at this tree and at the stand-in registry.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit

from kubeferry.bundler.files import CALICO, pinned_files
from kubeferry.bundler.sources import default_sources
from kubeferry.errors import InputError, OperationError
from kubeferry.lab import el_upstream
from kubeferry.lab.signing import SigningKey
from kubeferry.lab.standin_packages import build_debs, build_rpms
from kubeferry.versions import image_set, minor_of

REFERENCE_ENV = ("KUBEFERRY_SHARED_REFERENCE", "KUBEFERRY_REFERENCE_DIR")
BUNDLED_REFERENCE = Path(__file__).with_name("reference")
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
KEYRING_PATH = "keys/debian-archive-keyring.gpg"
REGISTRIES = ("registry.k8s.io", "docker.io")
FAMILIES = ("deb", "rpm")
# Debian/Ubuntu sources whose keys come from the keyring above instead of ftp-master.
DEBIAN_KEYS = ("debian-gpgkey", "debian-release-gpgkey", "debian-security-gpgkey")
_TIMEOUT = 300


def kubernetes_path(kubernetes: str, family: str) -> str:
    """``core:/stable:/v1.25/deb`` (or ``rpm``): where pkgs.k8s.io keeps a minor's repository."""
    return f"core:/stable:/v{minor_of(kubernetes)}/{family}"


def key_path(kubernetes: str, family: str) -> str:
    """Where pkgs.k8s.io publishes the repository's signing key (as in sources.yaml)."""
    repo = kubernetes_path(kubernetes, family)
    return f"{repo}/Release.key" if family == "deb" else f"{repo}/repodata/repomd.xml.key"


def file_path(url: str) -> str:
    """Where the tree keeps a pinned file: ``files/<host>/<path of its upstream URL>``."""
    parts = urlsplit(url)
    return f"files/{parts.netloc}{parts.path}"


def reference_dir() -> Path:
    """Where the reference files are read: ``$KUBEFERRY_SHARED_REFERENCE``, else
    ``../shared/reference`` beside the repository (or beside the folder holding a git
    worktree), else the copies kept in ``lab/reference`` (lab/reference/README.md)."""
    for name in REFERENCE_ENV:
        if os.environ.get(name):
            path = Path(os.environ[name])
            if not path.is_dir():
                raise OperationError(f"${name}={path} is not a directory")
            return path
    root = Path(__file__).resolve().parents[1]
    for candidate in (root.parent / "shared" / "reference",
                      root.parent.parent / "shared" / "reference"):
        if candidate.is_dir():
            return candidate
    return BUNDLED_REFERENCE


def make_tree(root: Path, kubernetes: str | Iterable[str],
              families: Iterable[str] = FAMILIES, files: bool = True,
              oses: Iterable[str] = ()) -> Path:
    """Write the stand-in package repositories, pinned files (unless ``files`` is False: the
    lab keeps reference copies of some calico releases only) and keys for ``kubernetes``
    (one release or several; one repository per minor, as pkgs.k8s.io) under ``root``, and
    the OS repositories of each EL OS in ``oses`` (``lab/el_upstream.py``; others have their
    real repositories)."""
    versions = [kubernetes] if isinstance(kubernetes, str) else list(kubernetes)
    families = tuple(families)
    unknown = set(families) - set(FAMILIES)
    if unknown or not versions:
        raise InputError(f"make_tree: families must be among {FAMILIES}, with a release")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    by_minor: dict[str, list[str]] = {}
    for version in versions:
        image_set(version)  # InputError for a release kubeferry does not know
        by_minor.setdefault(minor_of(version), []).append(version)
    with SigningKey("kubeferry lab stand-in pkgs.k8s.io") as key:
        for minor_versions in by_minor.values():
            if "deb" in families:
                _apt_repo(root, minor_versions, key)
            if "rpm" in families:
                _yum_repo(root, minor_versions, key)
    for version in versions if files else ():
        _pinned_files(root, version)
    _debian_keyring(root)
    for os_name in oses:
        if os_name in el_upstream.supported():
            el_upstream.add_el_repos(root, os_name)
    return root


def _run(argv: list[str], what: str) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(argv, capture_output=True, timeout=_TIMEOUT, check=False)
    if result.returncode != 0:
        lines = result.stderr.decode(errors="replace").strip().splitlines()
        raise OperationError(f"{what}: {argv[0]} failed: {lines[-1] if lines else 'no output'}")
    return result


def _replace_dir(target: Path, fill) -> None:  # noqa: ANN001 - a callable(Path) -> None
    """Build a directory next to ``target`` and rename it into place (never half-written)."""
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    fill(partial)
    if target.exists():
        shutil.rmtree(target)
    os.replace(partial, target)


def _deb_stanza(deb: Path, relative: str) -> str:
    control = _run(["dpkg-deb", "--field", str(deb)], f"reading {deb.name}").stdout.decode()
    head, _, description = control.rstrip("\n").partition("\nDescription:")
    data = deb.read_bytes()
    return "\n".join([
        head,
        f"Filename: {relative}",
        f"Size: {len(data)}",
        f"MD5sum: {hashlib.md5(data).hexdigest()}",  # noqa: S324 - apt's index field
        f"SHA256: {hashlib.sha256(data).hexdigest()}",
        f"Description:{description}",
    ])


def flat_apt_repo(repo: Path, debs: Iterable[Path], key: SigningKey | None,
                  label: str = "kubeferry lab stand-in of pkgs.k8s.io") -> None:
    """A flat apt repository of ``debs`` (files under ``repo``) as pkgs.k8s.io lays one out:
    ``Packages``, ``Packages.gz``, ``Release`` and, signed with ``key``, ``InRelease``,
    ``Release.gpg`` and ``Release.key``."""
    stanzas = [_deb_stanza(d, d.relative_to(repo).as_posix()) for d in sorted(set(debs))]
    packages = ("\n\n".join(stanzas) + "\n").encode()
    indexes = {"Packages": packages, "Packages.gz": gzip.compress(packages, mtime=0)}
    release = ["Origin: obs://build.opensuse.org/isv:kubernetes (kubeferry lab stand-in)",
               f"Label: {label}", "Architectures: amd64",
               "Date: Sat, 01 Jan 2022 00:00:00 UTC", "MD5Sum:"]
    for name, data in indexes.items():
        (repo / name).write_bytes(data)
        release.append(f" {hashlib.md5(data).hexdigest()} {len(data)} {name}")  # noqa: S324
    release.append("SHA256:")
    release += [f" {hashlib.sha256(d).hexdigest()} {len(d)} {n}" for n, d in indexes.items()]
    (repo / "Release").write_text("\n".join(release) + "\n")
    if key is not None:
        key.clearsign(repo / "Release", repo / "InRelease")
        key.detach_sign(repo / "Release", repo / "Release.gpg")
        (repo / "Release.key").write_bytes(key.public)


def _apt_repo(root: Path, versions: list[str], key: SigningKey) -> None:
    def fill(repo: Path) -> None:
        debs: set[Path] = set()
        for version in versions:
            debs.update(build_debs(version, repo / "amd64"))
        flat_apt_repo(repo, debs, key)

    _replace_dir(root / kubernetes_path(versions[0], "deb"), fill)


def _yum_repo(root: Path, versions: list[str], key: SigningKey) -> None:
    def fill(repo: Path) -> None:
        rpms: set[Path] = set()
        for version in versions:
            rpms.update(build_rpms(version, repo / "x86_64"))
        key.sign_rpms(sorted(rpms))
        _run(["createrepo_c", "--quiet", "--general-compress-type=gz", str(repo)],
             "the stand-in yum repository")
        repomd = repo / "repodata" / "repomd.xml"
        key.detach_sign(repomd, repomd.with_name("repomd.xml.asc"))
        repomd.with_name("repomd.xml.key").write_bytes(key.public)

    _replace_dir(root / kubernetes_path(versions[0], "rpm"), fill)


def has_reference_files(kubernetes: str) -> bool:
    """Whether the lab holds every pinned file of ``kubernetes`` (calico.yaml: only some releases)."""
    try:
        for name in pinned_files(kubernetes):
            _reference_file(name, kubernetes)
    except OperationError:
        return False
    return True


def _reference_file(name: str, kubernetes: str) -> Path:
    directory = reference_dir()
    wanted = f"calico-{image_set(kubernetes).calico}.yaml" if name == CALICO else name
    path = directory / wanted
    if not path.is_file():
        raise OperationError(
            f"{wanted} is not in {directory}: the lab serves pinned files from there (the real "
            f"URL is not reachable from the lab machine); add the upstream file"
        )
    return path


def _pinned_files(root: Path, kubernetes: str) -> None:
    for name, entry in pinned_files(kubernetes).items():
        source = _reference_file(name, kubernetes)
        data = source.read_bytes()
        got = hashlib.sha256(data).hexdigest()
        if got != entry["sha256"]:
            raise OperationError(f"{source}: sha256 {got} differs from kubeferry's pin "
                                 f"{entry['sha256']} for {name}; use the unmodified upstream file")
        target = root / file_path(entry["url"])
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)


def _debian_keyring(root: Path) -> None:
    if not DEBIAN_KEYRING.is_file():
        raise OperationError(f"{DEBIAN_KEYRING} is missing: install debian-archive-keyring "
                             "(scripts/bootstrap)")
    target = root / KEYRING_PATH
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEBIAN_KEYRING, target)


def lab_sources(kubernetes: str, os_name: str, repo_url: str, registry_url: str,
                arch: str = "amd64") -> dict[str, Any]:
    """The ``--sources`` document (``kubeferry bundle sources`` schema) of a build against
    the lab's upstream: every default source, with registry.k8s.io and docker.io mapped to
    the stand-in registry at ``registry_url``, the Kubernetes repository and its key, the
    pinned files and Debian's keys to the package server at ``repo_url``, and an EL OS's
    repositories stood in by ``lab/el_upstream.py`` too; Debian's archive keeps its real URL."""
    sources = default_sources(kubernetes, os_name, arch)
    base = repo_url.rstrip("/")
    family = "rpm" if os_name.startswith("el") else "deb"
    for name in REGISTRIES:
        sources.registries[name] = registry_url.rstrip("/")
    if "kubernetes" in sources.repositories:
        sources.repositories["kubernetes"] = f"{base}/{kubernetes_path(kubernetes, family)}"
        sources.repositories["kubernetes-gpgkey"] = f"{base}/{key_path(kubernetes, family)}"
    for name in DEBIAN_KEYS:
        if name in sources.repositories:
            sources.repositories[name] = f"{base}/{KEYRING_PATH}"
    if os_name in el_upstream.supported():  # the OS's own repositories, stood in too
        sources.repositories.update(el_upstream.mirror_sources(os_name, base))
    for name, entry in pinned_files(kubernetes).items():
        sources.files[name] = f"{base}/{file_path(entry['url'])}"
    return sources.to_dict()
