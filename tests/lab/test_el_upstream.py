"""The lab's EL stand-in upstream without a site: Rocky 8's BaseOS/AppStream and Docker CE's
repository as rpm-md trees under their real URL paths (rpmbuild, rpmsign, createrepo_c,
modifyrepo_c), and kubeferry's real package build resolving el8 against them through
``lab_sources``. The built repositories are cached under the lab cache (one build per
recipe), so this costs seconds after the first run."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import pytest
import requests
from lab_build_cache import download_cache as build_cache

from kubeferry.bundler.packages import build_packages
from kubeferry.bundler.sources import Sources, default_sources
from kubeferry.errors import OperationError
from kubeferry.lab.el_upstream import mirror_path, packages
from kubeferry.lab.static_http import StaticServer
from kubeferry.lab.upstream_packages import lab_sources, make_tree

REGISTRY = "http://127.0.0.1:5999"
BASEOS = "https://dl.rockylinux.org/pub/rocky/8/BaseOS/x86_64/os"
DOCKER = "https://download.docker.com/linux/centos/8/x86_64/stable"

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    root = make_tree(tmp_path_factory.mktemp("el-upstream-www"), "1.25.0", families=("rpm",),
                     oses=["el8"])
    with StaticServer(root) as server:
        yield root, server.url


def test_lab_sources_for_el8_point_every_os_repository_at_the_stand_in(served) -> None:
    _root, url = served
    repositories = lab_sources("1.25.0", "el8", url, REGISTRY)["repositories"]
    assert set(repositories) == set(default_sources("1.25.0", "el8", "amd64").repositories)
    assert repositories["el8-baseos"] == f"{url}/mirror/dl.rockylinux.org/pub/rocky/8/BaseOS/x86_64/os"
    assert repositories["el8-gpgkey"] == f"{url}/mirror/dl.rockylinux.org/pub/rocky/RPM-GPG-KEY-Rocky-8"
    assert repositories["docker-ce"] == f"{url}/mirror/download.docker.com/linux/centos/8/x86_64/stable"
    assert repositories["kubernetes"] == f"{url}/core:/stable:/v1.25/rpm"
    for name, address in repositories.items():
        assert address.startswith(url), name  # nothing left pointing at the internet
        assert requests.head(address if "key" in name else f"{address}/repodata/repomd.xml",
                             timeout=5).status_code == 200, name


def test_packages_are_signed_by_their_vendors_key_and_repomd_too(served, tmp_path: Path) -> None:
    root, url = served
    sources = lab_sources("1.25.0", "el8", url, REGISTRY)["repositories"]
    rocky = tmp_path / "rocky.asc"
    rocky.write_bytes(requests.get(sources["el8-gpgkey"], timeout=5).content)
    docker = tmp_path / "docker.asc"
    docker.write_bytes(requests.get(sources["docker-ce-gpgkey"], timeout=5).content)
    db = tmp_path / "rpmdb"
    db.mkdir()
    conntrack = root / mirror_path(BASEOS) / "Packages" / "conntrack-tools-1.4.4-11.el8.x86_64.rpm"
    containerd = root / mirror_path(DOCKER) / "Packages" / "containerd.io-1.6.22-3.1.el8.x86_64.rpm"

    def checksig(rpm: Path) -> subprocess.CompletedProcess:
        return subprocess.run(["rpmkeys", "--dbpath", str(db), "--checksig", str(rpm)],
                              capture_output=True, text=True, timeout=60)

    subprocess.run(["rpmkeys", "--dbpath", str(db), "--import", str(rocky)], check=True,
                   capture_output=True, timeout=60)
    assert checksig(conntrack).returncode == 0
    assert checksig(containerd).returncode != 0, "Docker's package is not signed by Rocky's key"
    subprocess.run(["rpmkeys", "--dbpath", str(db), "--import", str(docker)], check=True,
                   capture_output=True, timeout=60)
    assert checksig(containerd).returncode == 0
    keyring = tmp_path / "rocky.gpg"
    subprocess.run(["gpg", "--dearmor", "--output", str(keyring), str(rocky)], check=True,
                   capture_output=True, timeout=60)
    repomd = root / mirror_path(BASEOS) / "repodata" / "repomd.xml"
    assert subprocess.run(["gpgv", "--keyring", str(keyring), f"{repomd}.asc", str(repomd)],
                          capture_output=True, timeout=60).returncode == 0


def test_packages_carry_the_real_names_versions_and_wiring(served) -> None:
    root, _url = served
    rpm = root / mirror_path(BASEOS) / "Packages" / "conntrack-tools-1.4.4-11.el8.x86_64.rpm"
    query = subprocess.run(["rpm", "-qp", "--nosignature", "--qf", "%{NEVRA}\n", "--requires",
                            "--provides", "--list", str(rpm)], capture_output=True, text=True,
                           timeout=60, check=True).stdout.splitlines()
    assert query[0] == "conntrack-tools-1.4.4-11.el8.x86_64"
    assert "libnetfilter_cthelper.so.0()(64bit)" in query
    assert "conntrack = 1.0-1" in query  # what kubelet's `Requires: conntrack` finds
    assert "/usr/sbin/conntrack" in query
    ethtool = [p for p in packages("el8", "el8-baseos") if p.name == "ethtool"][0]
    assert (ethtool.epoch, ethtool.version) == (2, "5.13")
    repodata = root / mirror_path(BASEOS) / "repodata"
    comps = gzip.decompress(next(repodata.glob("*comps.xml.gz")).read_bytes()).decode() \
        if list(repodata.glob("*comps.xml.gz")) else next(repodata.glob("*comps.xml")).read_text()
    assert "<id>core</id>" in comps and "<id>minimal-environment</id>" in comps
    appstream = root / mirror_path(BASEOS.replace("BaseOS", "AppStream")) / "repodata"
    modules = gzip.decompress(next(appstream.glob("*modules.yaml.gz")).read_bytes()).decode()
    assert "container-selinux-2:2.205.0-2.module+el8.8.0+1265+fa25dd7a.noarch" in modules


def test_el8_bundle_resolves_against_the_stand_in_as_against_rocky(served) -> None:
    """The real package build for el8: base set from BaseOS (@core), the node tools' closure
    beyond it, containerd.io from Docker CE with container-selinux from the default module
    stream, kubeadm/kubelet/kubectl pinned to --k8s."""
    _root, url = served
    sources = Sources(**lab_sources("1.25.0", "el8", url, REGISTRY))
    (content,) = build_packages("1.25.0", "el8", "amd64", sources, build_cache())
    section = content.metadata["packages"]
    rows = {row["name"]: row for row in section["packages"]}
    assert rows["kubeadm"]["version"] == "1.25.0-0" and rows["kubeadm"]["repo"] == "kubernetes"
    assert rows["containerd.io"]["repo"] == "docker-ce"
    assert rows["container-selinux"]["version"].startswith("2:2.205.0-2.module+el8.8.0")
    assert rows["conntrack-tools"]["requested"] and not rows["libnetfilter_queue"]["requested"]
    for library in ("libnetfilter_cthelper", "libnetfilter_cttimeout", "libnetfilter_queue"):
        assert rows[library]["repo"] == "el8-baseos", library  # conntrack-tools' libraries
    for installed in ("glibc", "systemd", "openssl-libs", "iptables", "libseccomp", "firewalld"):
        assert installed not in rows, installed  # a minimal Rocky 8 has them
    assert section["warnings"] == []
    assert {key["name"] for key in section["keys"]} == {"el8-gpgkey", "docker-ce-gpgkey",
                                                         "kubernetes-gpgkey"}


def test_a_repository_signed_by_another_key_than_its_sources_name_fails_the_build(
        served, tmp_path: Path) -> None:
    """A wrong key URL (Rocky's key given for Docker's repository): nodes would refuse
    containerd.io with gpgcheck, so the build refuses it first, naming package, repo and key."""
    _root, url = served
    document = lab_sources("1.25.0", "el8", url, REGISTRY)
    document["repositories"]["docker-ce-gpgkey"] = document["repositories"]["el8-gpgkey"]
    with pytest.raises(OperationError, match=r"package containerd\.io 1\.6\.22-3\.1\.el8 from "
                       r"docker-ce: signed by key [0-9a-f]{16}, not by docker-ce-gpgkey"):
        build_packages("1.25.0", "el8", "amd64", Sources(**document), tmp_path / "cache")
