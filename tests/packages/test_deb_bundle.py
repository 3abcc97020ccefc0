"""The DEB path against Debian's real archive: bookworm (+updates, +security) from
deb.debian.org plus stand-in Kubernetes .debs in a signed flat repository on loopback;
then real apt-get installs them offline into a debootstrap'd minbase root from the bundle's
repository alone.

Only metadata and the closure of the stand-in set are downloaded from Debian; metadata
and packages are cached under /var/cache/kubeferry-test between runs.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from kubeferry.bundler.aptmeta import parse_release
from kubeferry.bundler.packages import build_packages, inspect_lines
from kubeferry.bundler.sources import Sources
from kubeferry.lab.signing import SigningKey
from kubeferry.lab.static_http import StaticServer
from kubeferry.lab.upstream_packages import flat_apt_repo

from .conftest import materialize
from .debian_root import MIRROR, cache_root, extract, minbase_tarball
from .standin_deb import build_kubernetes_debs

DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
WANTED = ["kubeadm", "kubelet", "kubectl"]


@pytest.fixture(scope="module")
def kubernetes_apt(tmp_path_factory):
    """The stand-in pkgs.k8s.io flat repository and Debian's keyring, served on loopback."""
    root = tmp_path_factory.mktemp("apt-www")
    repo = root / "kubernetes"
    with SigningKey("kubeferry test apt", home=tmp_path_factory.mktemp("gpg") / "home") as key:
        flat_apt_repo(repo, build_kubernetes_debs(repo / "amd64"), key)
    (root / "keys").mkdir()
    shutil.copy(DEBIAN_KEYRING, root / "keys" / "debian-archive-keyring.gpg")
    with StaticServer(root) as server:
        yield server


def _sources(url: str) -> Sources:
    keyring = f"{url}/keys/debian-archive-keyring.gpg"
    return Sources(repositories={
        "debian": MIRROR,
        "debian-security": "http://deb.debian.org/debian-security",
        "kubernetes": f"{url}/kubernetes",
        "debian-gpgkey": keyring,
        "debian-release-gpgkey": keyring,
        "debian-security-gpgkey": keyring,
        "kubernetes-gpgkey": f"{url}/kubernetes/Release.key",
    })


@pytest.fixture(scope="module")
def debian_bundle(kubernetes_apt):
    return build_packages("1.25.0", "debian12", "amd64", _sources(kubernetes_apt.url),
                          cache_root() / "build-cache", packages=WANTED)


def test_closure_against_real_bookworm(debian_bundle) -> None:
    (content,) = debian_bundle
    section = content.metadata["packages"]
    got = {row["name"]: row for row in section["packages"]}
    assert got["kubeadm"]["version"] == got["kubelet"]["version"] == "1.25.0-1.1"
    assert got["kubectl"]["version"] == "1.25.0-1.1"
    assert got["cri-tools"]["version"] == "1.25.0-1.1"
    assert got["kubernetes-cni"]["version"] == "1.1.1-1.1"
    # kubelet's real dependencies come from Debian, relative to minbase.
    for name in ("iptables", "socat", "ebtables", "ethtool", "conntrack", "iproute2"):
        assert got[name]["repo"].startswith("bookworm"), name
    for name in ("libc6", "util-linux", "mount", "dpkg", "apt"):
        assert name not in got, name  # Priority: required / minbase
    assert {row["arch"] for row in section["packages"]} <= {"amd64", "all"}
    signatures = {repo["name"]: repo["signature"] for repo in section["repositories"]}
    assert all(value.startswith("verified ") for value in signatures.values()), signatures
    assert section["format"] == "apt-flat" and section["path"] == "packages/debian12"
    assert "kubeadm=1.25.0-1.1" in section["install"]
    paths = {member.path for member in content.members}
    assert {"packages/debian12/Packages", "packages/debian12/Packages.gz",
            "packages/debian12/Release"} <= paths
    assert any(line.split()[:3] == ["*", "kubelet", "1.25.0-1.1"]
               for line in inspect_lines(content.metadata))


def _chroot(root: Path, *command: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
           "LC_ALL": "C"}
    return subprocess.run(["chroot", str(root), *command], capture_output=True, text=True,
                          timeout=900, env=env)


@pytest.mark.real
def test_apt_installs_offline_from_the_bundle(debian_bundle, tmp_path: Path) -> None:
    release = parse_release(requests.get(f"{MIRROR}/dists/bookworm/InRelease",
                                         timeout=(15, 60)).text, "bookworm")
    root = extract(minbase_tarball(release.fields["Version"]), tmp_path / "root")
    bundle = materialize(debian_bundle, tmp_path / "bundle")
    target = root / "opt" / "kubeferry"
    shutil.copytree(bundle / "packages", target / "packages")
    # Offline: the bundle's flat repository is the only source apt knows.
    (root / "etc" / "apt" / "sources.list").write_text("")
    for extra in (root / "etc" / "apt" / "sources.list.d").glob("*"):
        extra.unlink()
    (root / "etc" / "apt" / "sources.list.d" / "kubeferry.list").write_text(
        "deb [trusted=yes] file:/opt/kubeferry/packages/debian12 ./\n")
    policy = root / "usr" / "sbin" / "policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")  # no services start in the chroot
    policy.chmod(0o755)
    update = _chroot(root, "apt-get", "update")
    assert update.returncode == 0, update.stdout + update.stderr
    install = _chroot(root, "apt-get", "install", "-y", "--no-install-recommends",
                      "kubeadm=1.25.0-1.1", "kubelet=1.25.0-1.1", "kubectl=1.25.0-1.1")
    assert install.returncode == 0, install.stdout + install.stderr
    query = _chroot(root, "dpkg-query", "-W", "-f", "${Package} ${Version} ${Status}\\n",
                    "kubeadm", "kubelet", "kubectl", "socat", "conntrack")
    lines = sorted(query.stdout.strip().splitlines())
    assert lines[:3] == ["conntrack " + lines[0].split()[1] + " install ok installed",
                         "kubeadm 1.25.0-1.1 install ok installed",
                         "kubectl 1.25.0-1.1 install ok installed"]
    assert lines[3] == "kubelet 1.25.0-1.1 install ok installed"
    assert (root / "usr" / "bin" / "kubelet").is_symlink()  # the lab's double, installed


@pytest.mark.real
def test_installed_set_model_is_debootstrap_minbase(kubernetes_apt, tmp_path: Path) -> None:
    """The set a build assumes installed is exactly what debootstrap --variant=minbase
    installs (over-counting would leave a node without a package nobody bundled)."""
    from kubeferry.bundler.fetch import Fetcher
    from kubeferry.bundler.packages import installed_set, load_repositories, universe_of
    from kubeferry.bundler.repositories import os_spec

    spec = os_spec("debian12")
    sources = _sources(kubernetes_apt.url)
    repos = load_repositories(spec.repositories_for("amd64"), spec, "amd64", sources,
                  Fetcher(cache_root() / "build-cache"), {})
    installed, warnings = installed_set(spec, universe_of(spec, repos), repos)
    assert warnings == []
    release = parse_release(requests.get(f"{MIRROR}/dists/bookworm/InRelease",
                                         timeout=(15, 60)).text, "bookworm")
    status = subprocess.run(["tar", "-xzOf", str(minbase_tarball(release.fields["Version"])),
                             "./var/lib/dpkg/status"], capture_output=True, text=True,
                            timeout=300, check=True).stdout
    debootstrapped = {line.split()[1] for line in status.splitlines()
                      if line.startswith("Package: ")}
    assert {p.name for p in installed} == debootstrapped
