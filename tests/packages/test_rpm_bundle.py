"""EL packages end to end: stand-in upstream yum repositories on loopback -> closure ->
bundle repository -> real dnf installs from it alone into an empty installroot."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kubeferry.bundler.fetch import ChecksumMismatch
from kubeferry.bundler.packages import build_packages, inspect_lines
from kubeferry.bundler.resolver import Unsatisfiable
from kubeferry.errors import InputError, OperationError

from .conftest import materialize

WANTED = ["kubeadm", "kubelet", "kubectl", "containerd.io"]


def _build(el8_standin, cache: Path, **kwargs):
    sources = kwargs.pop("sources", None) or el8_standin.sources()
    return build_packages("1.25.0", "el8", "amd64", sources, cache,
                          packages=kwargs.pop("packages", WANTED), **kwargs)


@pytest.fixture(scope="module")
def el8_bundle(el8_standin, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    stats: dict[str, int] = {}
    contents = _build(el8_standin, cache, stats=stats)
    return contents, cache, stats


def _versions(section) -> dict[str, str]:
    return {row["name"]: row["version"] for row in section["packages"]}


def test_closure_follows_yum_rules(el8_bundle) -> None:
    contents, _, _ = el8_bundle
    assert [c.kind for c in contents] == ["packages"]
    section = contents[0].metadata["packages"]
    got = _versions(section)
    # Pinned to --k8s; the others at the newest version that satisfies them.
    assert got["kubeadm"] == got["kubelet"] == got["kubectl"] == "1.25.0-0"
    assert got["cri-tools"] == "1.25.0-0"  # newest that satisfies kubeadm's >= 1.24.2
    assert got["kubernetes-cni"] == "1.1.1-0"
    # Virtual provide, capability "ebtables", file provides (one only filelists has).
    assert got["conntrack-tools"] == "1.4.4-11.el8"
    assert got["iptables-ebtables"] == "1.8.4-24.el8"
    assert got["ethtool"] == "2:5.13-2.el8"
    assert got["libnetfilter_cthelper"] == "1.0.0-15.el8"
    assert got["xz"] == "5.2.4-4.el8"
    # Modules: socat 1.8 is in a stream that is not enabled; container-selinux comes from
    # the default stream, its non-modular build is filtered out as dnf does.
    assert got["socat"] == "1.7.4.1-1.el8"
    assert got["container-selinux"] == "2:2.205.0-2.module+el8.9.0+2+bbbb"
    # socat needs a newer glibc than the minimal node has: glibc and glibc-common come.
    assert got["glibc"] == got["glibc-common"] == "2.28-225.el8"
    # The base set is not bundled, and nothing i686.
    assert not {"bash", "filesystem", "util-linux", "iproute"} & set(got)
    assert {row["arch"] for row in section["packages"]} <= {"x86_64", "noarch"}
    assert section["format"] == "rpm-md" and section["path"] == "packages/el8"
    assert "kubeadm-1.25.0-0" in section["install"]
    assert [k["name"] for k in section["keys"]] == ["el8-gpgkey", "docker-ce-gpgkey",
                                                   "kubernetes-gpgkey"]
    by_name = {row["name"]: row for row in section["packages"]}
    assert by_name["conntrack-tools"]["reason"] == "kubelet -> conntrack-tools"
    assert by_name["kubeadm"]["requested"] and not by_name["socat"]["requested"]
    # Every package member is listed with the sha256 and size of the upstream file.
    members = {m.path: m for m in contents[0].members}
    for row in section["packages"]:
        assert members[row["path"]].sha256 == row["sha256"]
        assert members[row["path"]].size == row["size"]


def test_members_live_in_the_cache(el8_bundle) -> None:
    contents, cache, stats = el8_bundle
    for member in contents[0].members:
        assert member.source.parent == cache / "blobs" / "sha256"
        assert member.source.name == member.sha256
    assert stats["downloaded"] > 0


def test_rebuild_downloads_only_the_indexes(el8_standin, el8_bundle) -> None:
    _, cache, _ = el8_bundle
    stats: dict[str, int] = {}
    _build(el8_standin, cache, stats=stats)
    assert stats["downloaded"] < 20_000  # repomd.xml files and keys, no package


def test_inspect_shows_names_and_versions(el8_bundle) -> None:
    contents, _, _ = el8_bundle
    lines = inspect_lines(contents[0].metadata)
    assert not any("admin host" in line for line in lines)
    assert lines[0].startswith("packages    packages/el8 (rpm-md, el8 amd64):")
    assert any(line.split()[:3] == ["*", "kubeadm", "1.25.0-0"] for line in lines)
    assert any(line.split()[:2] == ["socat", "1.7.4.1-1.el8"] for line in lines)


def _dnf(root: Path, *args: str) -> subprocess.CompletedProcess:
    command = ["dnf", "-y", "-q", f"--installroot={root}", "--releasever=8",
               "--setopt=reposdir=/dev/null", "--setopt=install_weak_deps=False",
               f"--setopt=cachedir={root.parent / 'dnf-cache'}", "--disablerepo=*", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


@pytest.mark.real
def test_dnf_installs_from_the_bundle_alone(el8_standin, el8_bundle, tmp_path: Path) -> None:
    contents, _, _ = el8_bundle
    bundle = materialize(contents, tmp_path / "bundle")
    root = tmp_path / "root"
    root.mkdir()
    # A minimal node: the base set from the stand-in BaseOS (what @core would have put there).
    base = _dnf(root, f"--repofrompath=baseos,file://{el8_standin.root / 'el8-baseos'}",
                "--setopt=baseos.gpgcheck=0", "install", "filesystem", "glibc", "bash",
                "util-linux", "iproute")
    assert base.returncode == 0, base.stderr
    # Offline: only the bundle's repository, packages checked against the bundled key.
    repo = bundle / "packages" / "el8"
    key = next((repo / "keys").glob("kubernetes-gpgkey.*"))
    result = _dnf(root, f"--repofrompath=kubeferry,file://{repo}",
                  "--setopt=kubeferry.gpgcheck=1", f"--setopt=kubeferry.gpgkey=file://{key}",
                  "install", "kubeadm-1.25.0", "kubelet-1.25.0", "kubectl-1.25.0",
                  "containerd.io")
    assert result.returncode == 0, result.stderr
    query = subprocess.run(["rpm", "--root", str(root), "-q", "--qf", "%{NAME} %{VERSION}\\n",
                            "kubeadm", "kubelet", "kubectl", "containerd.io", "glibc",
                            "conntrack-tools"],
                           capture_output=True, text=True, timeout=60, check=True)
    assert query.stdout.split("\n")[:6] == [
        "kubeadm 1.25.0", "kubelet 1.25.0", "kubectl 1.25.0", "containerd.io 1.6.6",
        "glibc 2.28", "conntrack-tools 1.4.4"]
    release = subprocess.run(["rpm", "--root", str(root), "-q", "glibc"], capture_output=True,
                             text=True, timeout=60, check=True)
    assert "2.28-225.el8" in release.stdout  # upgraded from the bundle


@pytest.mark.real
def test_the_admin_hosts_python_comes_along_for_the_admin_host_only(
        el8_standin, tmp_path: Path) -> None:
    """`admin=True` (`--include kubeferry`): AppStream's python39 for an EL8 admin host,
    installed from the bundle alone as the README says; the nodes' install set lacks it."""
    contents = _build(el8_standin, tmp_path / "cache", admin=True)
    section = contents[0].metadata["packages"]
    by_name = {row["name"]: row for row in section["packages"]}
    assert by_name["python39"]["admin"] and not by_name["python39"]["requested"]
    assert by_name["python39-libs"]["reason"] == "python39 -> python39-libs"
    assert section["admin"] == ["python39-3.9.20-1.module+el8.10.0+3+cccc"]
    assert not any(spec.startswith("python39") for spec in section["install"])
    assert any("admin host" in line and "python39" in line for line in inspect_lines(section_of(contents)))
    bundle = materialize(contents, tmp_path / "bundle")
    root = tmp_path / "root"
    root.mkdir()
    base = _dnf(root, f"--repofrompath=baseos,file://{el8_standin.root / 'el8-baseos'}",
                "--setopt=baseos.gpgcheck=0", "install", "filesystem", "glibc", "bash")
    assert base.returncode == 0, base.stderr
    repo = bundle / "packages" / "el8"
    keys = ",".join(f"file://{key}" for key in sorted((repo / "keys").iterdir()))
    result = _dnf(root, f"--repofrompath=kubeferry,file://{repo}", "--setopt=kubeferry.gpgcheck=1",
                  f"--setopt=kubeferry.gpgkey={keys}", "install", "python39")
    assert result.returncode == 0, result.stderr
    query = subprocess.run(["rpm", "--root", str(root), "-q", "python39"], capture_output=True,
                           text=True, timeout=60, check=True)
    assert query.stdout.startswith("python39-3.9.20")


def section_of(contents) -> dict:
    return {"packages": contents[0].metadata["packages"]}


def test_unsatisfiable_dependency_names_the_chain(el8_standin, tmp_path: Path) -> None:
    with pytest.raises(Unsatisfiable) as error:
        _build(el8_standin, tmp_path / "cache", packages=["broken-tool"])
    message = str(error.value)
    assert message == ("cannot satisfy broken-tool -> broken-lib -> does-not-exist >= 2: no "
                       "package provides it in el8-baseos, el8-appstream, docker-ce, kubernetes")
    assert error.value.exit_code == 1 and "\n" not in message


def test_unknown_package_and_version(el8_standin, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="package 'no-such-tool' not found") as error:
        _build(el8_standin, tmp_path / "cache", extra=["no-such-tool"])
    assert error.value.exit_code == 2
    with pytest.raises(InputError, match=r"kubeadm = 1.26.0 not found .*available: 1.24.17"):
        build_packages("1.26.0", "el8", "amd64", el8_standin.sources(), tmp_path / "cache",
                       packages=["kubeadm"])


def test_unknown_os_and_arch(el8_standin, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--os 'solaris' is not supported: choose one of el7"):
        build_packages("1.25.0", "solaris", "amd64", el8_standin.sources(), tmp_path)
    with pytest.raises(InputError, match="--arch arm64: CentOS 7.9.2009"):
        build_packages("1.25.0", "el7", "arm64", el8_standin.sources(), tmp_path)


def test_checksum_mismatch_fails_naming_url(el8_standin, tmp_path: Path) -> None:
    rpm = next(p for p in el8_standin.rpms["kubernetes"] if p.name.startswith("kubernetes-cni-1.1.1"))
    original = rpm.read_bytes()
    try:
        rpm.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
        with pytest.raises(ChecksumMismatch) as error:
            _build(el8_standin, tmp_path / "cache", packages=["kubernetes-cni"])
    finally:
        rpm.write_bytes(original)
    message = str(error.value)
    assert f"{el8_standin.url}/kubernetes/Packages/{rpm.name}" in message
    assert "expected sha256:" in message and ", got sha256:" in message
    assert error.value.exit_code == 1


def test_corrupt_metadata_is_one_line(el8_standin, tmp_path: Path) -> None:
    import gzip
    import hashlib

    broken = tmp_path / "www" / "broken"
    (broken / "repodata").mkdir(parents=True)
    garbage = gzip.compress(b"<metadata><package><name>x</name")
    digest = hashlib.sha256(garbage).hexdigest()
    (broken / "repodata" / "p.xml.gz").write_bytes(garbage)
    (broken / "repodata" / "repomd.xml").write_text(
        '<repomd xmlns="http://linux.duke.edu/metadata/repo"><data type="primary">'
        f'<checksum type="sha256">{digest}</checksum><location href="repodata/p.xml.gz"/>'
        "</data></repomd>")
    from kubeferry.lab.static_http import StaticServer

    with StaticServer(tmp_path / "www") as server:
        sources = el8_standin.sources()
        sources.repositories["kubernetes"] = f"{server.url}/broken"
        with pytest.raises(OperationError) as error:
            _build(el8_standin, tmp_path / "cache", sources=sources)
    message = str(error.value)
    assert message.startswith(f"repository kubernetes ({server.url}/broken): corrupt metadata")
    assert "\n" not in message and error.value.exit_code == 1
