"""The stand-in packages are named, versioned and wired like the real ones (dpkg, rpm)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from kubeferry.errors import InputError
from kubeferry.lab.kubectl_release import release, sha256_file
from kubeferry.lab.standin_packages import DEFAULT_INTERPRETER, build_debs, build_rpms, package_versions
from kubeferry.versions import image_set

OS_PACKAGES = {"iptables", "iproute2", "socat", "util-linux", "mount", "ebtables", "ethtool", "conntrack"}


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    built = build_debs("1.25.0", tmp_path_factory.mktemp("debs"))
    return {p.name.split("_")[0]: p for p in built}


@pytest.fixture(scope="module")
def rpms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    built = build_rpms("1.25.0", tmp_path_factory.mktemp("rpms"))
    return {p.name.rsplit("-", 2)[0]: p for p in built}


def field(deb: Path, name: str) -> str:
    return run("dpkg-deb", "--field", str(deb), name).stdout.strip()


def test_deb_names_versions_and_dependencies(debs: dict[str, Path]) -> None:
    assert sorted(p.name for p in debs.values()) == [
        "cri-tools_1.25.0-1.1_amd64.deb",
        "kubeadm_1.25.0-1.1_amd64.deb",
        "kubectl_1.25.0-1.1_amd64.deb",
        "kubelet_1.25.0-1.1_amd64.deb",
        "kubernetes-cni_1.1.1-1.1_amd64.deb",
    ]
    assert field(debs["kubeadm"], "Depends") == (
        "kubelet (>= 1.19.0), kubectl (>= 1.19.0), kubernetes-cni (>= 0.8.7), cri-tools (>= 1.24.2)"
    )
    assert field(debs["kubelet"], "Depends") == (
        "iptables (>= 1.4.21), iproute2, socat, util-linux, mount, ebtables, ethtool, conntrack, kubernetes-cni (>= 0.8.7)"
    )
    info = run("dpkg-deb", "--info", str(debs["kubeadm"])).stdout
    assert "conffiles" in info and "not the real kubeadm" in info
    contents = run("dpkg-deb", "--contents", str(debs["kubeadm"])).stdout
    assert "./usr/bin/kubeadm -> ../lib/kubeferry-lab/kubeadm/kubeadm" in contents
    assert "./etc/systemd/system/kubelet.service.d/10-kubeadm.conf" in contents
    assert (
        "./usr/lib/systemd/system/kubelet.service"
        in run("dpkg-deb", "--contents", str(debs["kubelet"])).stdout
    )
    assert "./opt/cni/bin/bridge" in run("dpkg-deb", "--contents", str(debs["kubernetes-cni"])).stdout


def test_programs_use_the_private_interpreter_and_carry_the_release_row(
    debs: dict[str, Path], tmp_path: Path
) -> None:
    run("dpkg-deb", "-x", str(debs["kubeadm"]), str(tmp_path))
    program = tmp_path / "usr/lib/kubeferry-lab/kubeadm/kubeadm"
    assert program.read_text().splitlines()[0] == f"#!{DEFAULT_INTERPRETER}"
    row = yaml.safe_load((program.parent / "release.yaml").read_text())
    images = image_set("1.25.0")
    assert row == {
        "version": "1.25.0",
        "repository": images.kubeadm_repository,
        "pause": images.pause,
        "etcd": images.etcd,
        "coredns": images.coredns,
        "cri_tools": "1.25.0",
    }
    unit = (tmp_path / "etc/systemd/system/kubelet.service.d/10-kubeadm.conf").read_text()
    assert "EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env" in unit


def test_dpkg_installs_them_together_needing_only_os_packages(debs: dict[str, Path], tmp_path: Path) -> None:
    admin = tmp_path / "var/lib/dpkg"
    (admin / "info").mkdir(parents=True)
    (admin / "updates").mkdir()
    (admin / "status").write_text("")
    (admin / "available").write_text("")
    result = run(
        "dpkg", "--root", str(tmp_path), "--log", str(tmp_path / "dpkg.log"), "-i", *map(str, debs.values())
    )
    assert result.returncode == 1, "kubelet needs OS packages the empty root lacks"
    missing = {
        line.split("Package ")[1].split(" ")[0]
        for line in result.stderr.splitlines()
        if "Package " in line and "is not installed" in line
    }
    assert missing == OS_PACKAGES, result.stderr
    for name in ("kubectl", "cri-tools", "kubernetes-cni"):
        status = run("dpkg", "--root", str(tmp_path), "-s", name).stdout
        assert "Status: install ok installed" in status, status
    kubectl = tmp_path / "usr/bin/kubectl"  # the real, official binary of the release's minor
    assert sha256_file(kubectl) == release("1.25").kubectl_sha256
    client = json.loads(run(str(kubectl), "version", "--client", "-o", "json").stdout)["clientVersion"]
    assert client["gitVersion"] == "v1.25.0"


def test_rpms_named_and_wired_like_the_legacy_yum_repo(rpms: dict[str, Path]) -> None:
    assert sorted(p.name for p in rpms.values()) == [
        "cri-tools-1.25.0-0.x86_64.rpm",
        "kubeadm-1.25.0-0.x86_64.rpm",
        "kubectl-1.25.0-0.x86_64.rpm",
        "kubelet-1.25.0-0.x86_64.rpm",
        "kubernetes-cni-1.1.1-0.x86_64.rpm",
    ]
    requires = {
        line.strip()
        for line in run("rpm", "-qpR", str(rpms["kubeadm"])).stdout.splitlines()
        if not line.startswith("rpmlib(")
    }
    assert requires == {
        "kubelet >= 1.19.0",
        "kubectl >= 1.19.0",
        "kubernetes-cni >= 0.8.7",
        "cri-tools >= 1.24.2",
    }
    kubelet = {line.strip() for line in run("rpm", "-qpR", str(rpms["kubelet"])).stdout.splitlines()}
    assert {"iptables >= 1.4.21", "iproute", "conntrack", "ebtables", "kubernetes-cni >= 0.8.7"} <= kubelet
    assert not any("python" in r for r in kubelet), "no automatic interpreter dependency"
    assert (
        run("rpm", "-qpc", str(rpms["kubeadm"])).stdout.strip()
        == "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf"
    )
    assert "/usr/bin/kubeadm" in run("rpm", "-qpl", str(rpms["kubeadm"])).stdout


def test_versions_follow_the_release_tables() -> None:
    assert package_versions("1.28.2")["kubernetes-cni"] == "1.2.0"
    with pytest.raises(InputError):
        package_versions("1.99.0")
