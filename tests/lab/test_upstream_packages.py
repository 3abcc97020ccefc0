"""The lab's package upstream without a site: the stand-in pkgs.k8s.io repositories (apt and
yum, signed with a throwaway key), the pinned files, the HTTP server, and ``lab_sources``
driving kubeferry's real package and file builders (Debian's own packages from the real
deb.debian.org; metadata and packages cached under /var/cache/kubeferry-test)."""

from __future__ import annotations

import gzip
import hashlib
import subprocess
from pathlib import Path

import pytest
import requests
from lab_build_cache import download_cache as build_cache

from kubeferry.bundler.fetch import Fetcher
from kubeferry.bundler.files import build_files
from kubeferry.bundler.packages import build_packages
from kubeferry.bundler.repositories import RepoSpec, fetch_key, load_apt_repo, load_rpm_repo
from kubeferry.bundler.sources import Sources, default_sources
from kubeferry.errors import OperationError
from kubeferry.lab.static_http import StaticServer
from kubeferry.lab.upstream_packages import (
    KEYRING_PATH,
    file_path,
    lab_sources,
    make_tree,
    reference_dir,
)
from kubeferry.versions import image_set

STANDIN = ["kubeadm", "kubelet", "kubectl", "cri-tools", "kubernetes-cni"]
REGISTRY = "http://127.0.0.1:5999"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    root = make_tree(tmp_path_factory.mktemp("upstream-www"), ["1.25.0", "1.25.1"])
    with StaticServer(root) as server:
        yield root, server.url


def test_tree_is_laid_out_like_pkgs_k8s_io(served) -> None:
    root, _url = served
    deb = root / "core:/stable:/v1.25/deb"
    for name in ("InRelease", "Release", "Release.gpg", "Release.key", "Packages",
                 "Packages.gz"):
        assert (deb / name).is_file(), name
    assert (deb / "amd64/kubeadm_1.25.0-1.1_amd64.deb").is_file()
    assert (deb / "amd64/kubeadm_1.25.1-1.1_amd64.deb").is_file()  # one repository per minor
    assert gzip.decompress((deb / "Packages.gz").read_bytes()) == (deb / "Packages").read_bytes()
    rpm = root / "core:/stable:/v1.25/rpm"
    for name in ("repodata/repomd.xml", "repodata/repomd.xml.asc", "repodata/repomd.xml.key"):
        assert (rpm / name).is_file(), name
    assert (rpm / "x86_64/kubeadm-1.25.0-0.x86_64.rpm").is_file()
    calico = root / file_path(image_set("1.25.0").calico_manifest_url)
    assert calico.read_bytes() == (reference_dir() / "calico-v3.24.5.yaml").read_bytes()
    assert not list(root.rglob(".*partial"))


@pytest.mark.real
def test_apt_repository_is_signed_and_read_by_the_bundler(served, tmp_path: Path) -> None:
    _root, url = served
    sources = Sources(repositories=lab_sources("1.25.0", "debian12", url, REGISTRY)["repositories"])
    fetcher = Fetcher(tmp_path / "cache")
    key = fetch_key("kubernetes-gpgkey", sources, fetcher)
    repo = load_apt_repo(RepoSpec("kubernetes", "kubernetes", flat=True), sources.repositories[
        "kubernetes"], "amd64", fetcher, [key])
    assert repo.signature.startswith("verified ")
    versions = {(p.name, p.version) for p in repo.packages}
    assert {("kubeadm", "1.25.0-1.1"), ("kubeadm", "1.25.1-1.1"),
            ("kubernetes-cni", "1.1.1-1.1")} <= versions
    # a Release whose InRelease was not made with that key is refused
    with pytest.raises(OperationError, match="(?i)signature|gpgv"):
        load_apt_repo(RepoSpec("kubernetes", "kubernetes", flat=True),
                      sources.repositories["kubernetes"], "amd64", fetcher,
                      [fetch_key("debian-gpgkey", sources, fetcher)])


@pytest.mark.real
def test_yum_repository_is_signed_and_read_by_the_bundler(served, tmp_path: Path) -> None:
    root, url = served
    sources = lab_sources("1.25.0", "el8", url, REGISTRY)
    base = sources["repositories"]["kubernetes"]
    assert base == f"{url}/core:/stable:/v1.25/rpm"
    repo = load_rpm_repo(RepoSpec("kubernetes", "kubernetes"), base, "amd64",
                         Fetcher(tmp_path / "cache"))
    assert {("kubeadm", "1.25.0-0"), ("kubelet", "1.25.1-0")} <= {
        (p.name, p.version) for p in repo.packages}
    key = tmp_path / "key.asc"
    key.write_bytes(requests.get(sources["repositories"]["kubernetes-gpgkey"], timeout=10).content)
    db = tmp_path / "rpmdb"
    db.mkdir()
    rpm = root / "core:/stable:/v1.25/rpm/x86_64/kubeadm-1.25.0-0.x86_64.rpm"

    def checksig() -> subprocess.CompletedProcess:
        return subprocess.run(["rpmkeys", "--dbpath", str(db), "--checksig", str(rpm)],
                              capture_output=True, text=True, timeout=60)

    assert checksig().returncode != 0, "signed, by a key rpm does not know yet"
    subprocess.run(["rpmkeys", "--dbpath", str(db), "--import", str(key)], check=True,
                   capture_output=True, timeout=60)
    checked = checksig()
    assert checked.returncode == 0, checked.stdout
    assert checked.stdout.strip().endswith("digests signatures OK"), checked.stdout
    keyring = tmp_path / "keyring.gpg"
    subprocess.run(["gpg", "--dearmor", "--output", str(keyring), str(key)], check=True,
                   capture_output=True, timeout=60)
    repomd = root / "core:/stable:/v1.25/rpm/repodata/repomd.xml"
    verified = subprocess.run(["gpgv", "--keyring", str(keyring), f"{repomd}.asc", str(repomd)],
                              capture_output=True, timeout=60)
    assert verified.returncode == 0, verified.stderr


def test_lab_sources_remaps_only_what_the_lab_stands_in_for() -> None:
    url = "http://127.0.0.1:8000"
    debian = lab_sources("1.25.0", "debian12", url, REGISTRY)
    default = default_sources("1.25.0", "debian12", "amd64").to_dict()
    assert set(debian) == {"registries", "repositories", "files", "indexes"}
    assert debian["indexes"] == default["indexes"]  # the real package index, as pip is set up
    assert debian["registries"] == {"registry.k8s.io": REGISTRY, "docker.io": REGISTRY}
    repositories = debian["repositories"]
    assert set(repositories) == set(default["repositories"])
    assert repositories["debian"] == "http://deb.debian.org/debian"  # the real archive
    assert repositories["debian-security"] == default["repositories"]["debian-security"]
    assert repositories["kubernetes"] == f"{url}/core:/stable:/v1.25/deb"
    assert repositories["kubernetes-gpgkey"] == f"{url}/core:/stable:/v1.25/deb/Release.key"
    for key in ("debian-gpgkey", "debian-release-gpgkey", "debian-security-gpgkey"):
        assert repositories[key] == f"{url}/{KEYRING_PATH}"
    assert debian["files"] == {"calico.yaml": f"{url}/files/raw.githubusercontent.com/"
                               "projectcalico/calico/v3.24.5/manifests/calico.yaml"}
    el7 = lab_sources("1.25.3", "el7", url, REGISTRY)["repositories"]
    assert el7["kubernetes"] == f"{url}/core:/stable:/v1.25/rpm"
    assert el7["kubernetes-gpgkey"] == f"{url}/core:/stable:/v1.25/rpm/repodata/repomd.xml.key"
    assert el7["el7-os"] == f"{url}/mirror/vault.centos.org/7.9.2009/os/x86_64"  # stood in too
    assert el7["elrepo-kernel"] == f"{url}/mirror/mirrors.coreix.net/elrepo-archive-archive/kernel/el7/x86_64"
    el9 = lab_sources("1.25.3", "el9", url, REGISTRY)["repositories"]
    assert el9["el9-baseos"] == "https://dl.rockylinux.org/pub/rocky/9/BaseOS/x86_64/os"  # real


def test_static_server_serves_ranges_and_nothing_outside_its_root(tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "a:b").write_bytes(b"0123456789")
    (tmp_path / "secret").write_text("no")
    with StaticServer(tmp_path / "www") as server:
        assert requests.get(f"{server.url}/a:b", timeout=5).content == b"0123456789"
        part = requests.get(f"{server.url}/a:b", headers={"Range": "bytes=4-"}, timeout=5)
        assert part.status_code == 206 and part.content == b"456789"
        head = requests.head(f"{server.url}/a:b", timeout=5)
        assert head.status_code == 200 and head.headers["Content-Length"] == "10"
        assert requests.get(f"{server.url}/missing", timeout=5).status_code == 404
        assert requests.get(f"{server.url}/%2e%2e/secret", timeout=5).status_code in (403, 404)


def test_missing_reference_file_fails_naming_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("KUBEFERRY_SHARED_REFERENCE", str(tmp_path))
    with pytest.raises(OperationError, match=r"calico-v3\.24\.5\.yaml is not in"):
        make_tree(tmp_path / "www", "1.25.0", families=())
    (tmp_path / "calico-v3.24.5.yaml").write_text("changed\n")
    with pytest.raises(OperationError, match="differs from kubeferry's pin"):
        make_tree(tmp_path / "www", "1.25.0", families=())


@pytest.mark.real
def test_package_and_file_builds_against_the_lab_sources(served) -> None:
    """build_packages/build_files with lab_sources: the stand-ins from the lab, the rest of the
    closure from the real Debian archive, every signature and checksum checked."""
    _root, url = served
    sources = Sources(**lab_sources("1.25.0", "debian12", url, REGISTRY))
    (content,) = build_packages("1.25.0", "debian12", "amd64", sources, build_cache())
    section = content.metadata["packages"]
    rows = {row["name"]: row for row in section["packages"]}
    for name in STANDIN:
        assert rows[name]["repo"] == "kubernetes", name
    assert rows["kubeadm"]["version"] == "1.25.0-1.1"  # pinned to --k8s, not the newer 1.25.1
    for name in ("containerd", "socat", "conntrack", "ebtables", "haproxy", "keepalived"):
        assert rows[name]["repo"].startswith("bookworm"), name
    assert all(repo["signature"].startswith("verified ") for repo in section["repositories"])
    assert {key["name"] for key in section["keys"]} >= {"kubernetes-gpgkey", "debian-gpgkey"}
    files = build_files("1.25.0", sources, build_cache())
    (row,) = files.metadata["files"]["files"]
    assert row["sha256"] == hashlib.sha256(
        (reference_dir() / "calico-v3.24.5.yaml").read_bytes()).hexdigest()
