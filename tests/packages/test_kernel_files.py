"""kernel-ml for EL7 as its own repository, and pinned files (calico.yaml) verified."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from kubeferry.bundler.fetch import ChecksumMismatch
from kubeferry.bundler.files import build_files
from kubeferry.bundler.packages import build_packages, inspect_lines
from kubeferry.bundler.sources import Sources
from kubeferry.errors import InputError, OperationError
from kubeferry.lab.upstream_packages import reference_dir

from .conftest import materialize
from .httpserver import StaticServer
from .standin_rpm import RpmSpec, SigningKey, build_rpms, make_repo

CALICO = reference_dir() / "calico-v3.24.5.yaml"
CALICO_SHA256 = "1e8825b3bc56bd1b2a7565783630a97a09a4fd9f92767d013e4201cf8f88812c"
KERNEL_REQUIRES = ["linux-firmware >= 20100806-2", "grubby >= 8.28-2", "dracut", "/bin/sh"]


@pytest.fixture(scope="module")
def elrepo(tmp_path_factory, el8_standin):
    """A stand-in ELRepo kernel archive with its own key, and an EL7 extras repository signed,
    as CentOS's is, by the OS key (el8_standin's, which the el7 sources below name)."""
    root = tmp_path_factory.mktemp("elrepo-www")
    work = tmp_path_factory.mktemp("elrepo-build")
    key = SigningKey(tmp_path_factory.mktemp("gpg") / "home", name="stand-in elrepo")
    try:
        kernels = build_rpms([
            RpmSpec("kernel-ml", "4.19.12", "1.el7.elrepo", requires=KERNEL_REQUIRES,
                    files=["/boot/vmlinuz-4.19.12-1.el7.elrepo.x86_64"]),
            RpmSpec("kernel-ml", "6.9.7", "1.el7.elrepo", requires=KERNEL_REQUIRES,
                    files=["/boot/vmlinuz-6.9.7-1.el7.elrepo.x86_64"]),
            RpmSpec("kernel-ml-devel", "4.19.12", "1.el7.elrepo"),
        ], root / "elrepo-kernel", work)
        extras = build_rpms([
            RpmSpec("linux-firmware", "20200421", "80.git78c0348.el7_9", arch="noarch"),
            RpmSpec("grubby", "8.28", "26.el7", files=["/usr/sbin/grubby"]),
            RpmSpec("dracut", "033", "572.el7", files=["/usr/bin/dracut"]),
        ], root / "el7-extras", work)
        key.sign_rpms(kernels)
        os_key = SigningKey(el8_standin.gpg_home, create=False)
        try:
            os_key.sign_rpms(extras)
        finally:
            os_key.close()
        make_repo(root / "elrepo-kernel")
        make_repo(root / "el7-extras")
        (root / "key.asc").write_bytes(key.public)
    finally:
        key.close()
        shutil.rmtree(work, ignore_errors=True)
    with StaticServer(root) as server:
        yield server


def _el7_sources(el8_standin, elrepo) -> Sources:
    """EL7's repository names on the stand-in repositories."""
    base = el8_standin.sources().repositories
    return Sources(repositories={
        "el7-os": base["el8-baseos"], "el7-updates": base["el8-appstream"],
        "el7-extras": f"{elrepo.url}/el7-extras", "docker-ce": base["docker-ce"],
        "kubernetes": base["kubernetes"], "elrepo-kernel": f"{elrepo.url}/elrepo-kernel",
        "el7-gpgkey": base["el8-gpgkey"], "docker-ce-gpgkey": base["docker-ce-gpgkey"],
        "kubernetes-gpgkey": base["kubernetes-gpgkey"], "elrepo-gpgkey": f"{elrepo.url}/key.asc",
    })


@pytest.fixture(scope="module")
def el7_contents(el8_standin, elrepo, tmp_path_factory):
    return build_packages("1.25.0", "el7", "amd64", _el7_sources(el8_standin, elrepo),
                          tmp_path_factory.mktemp("cache"), include_kernel=True,
                          packages=["kubeadm", "kubelet", "kubectl", "containerd.io"])


def test_kernel_is_its_own_repository(el7_contents) -> None:
    packages, kernel = el7_contents
    assert (packages.kind, kernel.kind) == ("packages", "kernel")
    section = kernel.metadata["kernel"]
    got = {row["name"]: row["version"] for row in section["packages"]}
    # The pinned runbook kernel, not the newest; its dependencies beyond the base set.
    assert got == {"kernel-ml": "4.19.12-1.el7.elrepo", "linux-firmware":
                   "20200421-80.git78c0348.el7_9", "grubby": "8.28-26.el7",
                   "dracut": "033-572.el7"}
    assert section["path"] == "kernel/el7" and section["package"] == "kernel-ml"
    assert {m.path.split("/")[0] for m in kernel.members} == {"kernel"}
    assert sorted(k["name"] for k in section["keys"]) == ["el7-gpgkey", "elrepo-gpgkey"]
    assert "kernel-ml" not in {row["name"] for row in packages.metadata["packages"]["packages"]}
    assert any("kernel-ml" in line for line in inspect_lines(kernel.metadata))


def test_kernel_version_override(el8_standin, elrepo, tmp_path: Path) -> None:
    contents = build_packages("1.25.0", "el7", "amd64", _el7_sources(el8_standin, elrepo),
                              tmp_path, include_kernel=True, kernel_version="6.9.7",
                              packages=["kubectl"])
    rows = contents[1].metadata["kernel"]["packages"]
    assert {"kernel-ml": "6.9.7-1.el7.elrepo"}.items() <= {
        r["name"]: r["version"] for r in rows}.items()
    with pytest.raises(InputError, match=r"kernel-ml = 5.0.0 not found .*4.19.12, 6.9.7"):
        build_packages("1.25.0", "el7", "amd64", _el7_sources(el8_standin, elrepo), tmp_path,
                       include_kernel=True, kernel_version="5.0.0", packages=["kubectl"])


def test_kernel_only_for_el7(el8_standin, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="kernel-ml is bundled for el7 only"):
        build_packages("1.25.0", "el8", "amd64", el8_standin.sources(), tmp_path,
                       include_kernel=True)


@pytest.mark.real
def test_dnf_installs_kernel_ml_offline(el8_standin, el7_contents, tmp_path: Path) -> None:
    bundle = materialize(el7_contents, tmp_path / "bundle")
    root = tmp_path / "root"
    root.mkdir()
    common = ["dnf", "-y", "-q", f"--installroot={root}", "--releasever=7",
              "--setopt=reposdir=/dev/null", f"--setopt=cachedir={tmp_path / 'dnf-cache'}",
              "--disablerepo=*"]
    base = subprocess.run(common + [
        f"--repofrompath=os,file://{el8_standin.root / 'el8-baseos'}", "--setopt=os.gpgcheck=0",
        "install", "filesystem", "glibc", "bash"], capture_output=True, text=True, timeout=600)
    assert base.returncode == 0, base.stderr
    repos = []
    for name, path in (("kf", bundle / "packages" / "el7"), ("kfkernel", bundle / "kernel" / "el7")):
        keys = " ".join(f"file://{key}" for key in sorted((path / "keys").iterdir()))
        repos += [f"--repofrompath={name},file://{path}", f"--setopt={name}.gpgcheck=1",
                  f"--setopt={name}.gpgkey={keys}"]
    result = subprocess.run(common + repos + ["install", "kernel-ml-4.19.12"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    query = subprocess.run(["rpm", "--root", str(root), "-q", "kernel-ml", "grubby"],
                           capture_output=True, text=True, timeout=60, check=True)
    assert query.stdout.split() == ["kernel-ml-4.19.12-1.el7.elrepo.x86_64",
                                    "grubby-8.28-26.el7.x86_64"]


@pytest.fixture
def calico_server(tmp_path: Path):
    www = tmp_path / "www"
    www.mkdir()
    shutil.copy(CALICO, www / "calico.yaml")
    (www / "tampered.yaml").write_bytes(CALICO.read_bytes().replace(b"192.168.0.0/16",
                                                                   b"10.244.0.0/16"))
    (www / "tool.sh").write_bytes(b"#!/bin/sh\necho tool\n")
    with StaticServer(www) as server:
        yield server


def test_calico_manifest_is_pinned_and_verified(calico_server, tmp_path: Path) -> None:
    assert hashlib.sha256(CALICO.read_bytes()).hexdigest() == CALICO_SHA256
    sources = Sources(files={"calico.yaml": f"{calico_server.url}/calico.yaml"})
    content = build_files("1.25.0", sources, tmp_path / "cache")
    assert content.kind == "files"
    (member,) = content.members
    assert (member.path, member.sha256) == ("files/calico.yaml", CALICO_SHA256)
    assert member.source == tmp_path / "cache" / "blobs" / "sha256" / CALICO_SHA256
    assert content.metadata["files"]["calico"] == "v3.24.5"
    assert content.metadata["files"]["files"][0]["url"] == f"{calico_server.url}/calico.yaml"
    assert inspect_lines(content.metadata)[1].startswith("    files/calico.yaml  ")


def test_tampered_file_fails_naming_url_expected_and_got(calico_server, tmp_path: Path) -> None:
    url = f"{calico_server.url}/tampered.yaml"
    with pytest.raises(ChecksumMismatch) as error:
        build_files("1.25.0", Sources(files={"calico.yaml": url}), tmp_path / "cache")
    message = str(error.value)
    got = hashlib.sha256((tmp_path / "www" / "tampered.yaml").read_bytes())
    assert message == (f"file calico.yaml: checksum mismatch for {url}: expected "
                       f"sha256:{CALICO_SHA256}, got sha256:{got.hexdigest()}")
    assert error.value.exit_code == 1


def test_other_pinned_files(calico_server, tmp_path: Path) -> None:
    tool = (tmp_path / "www" / "tool.sh").read_bytes()
    sources = Sources(files={"calico.yaml": f"{calico_server.url}/calico.yaml"})
    pinned = {"tool.sh": {"url": calico_server.url + "/tool.sh",
                          "sha256": hashlib.sha256(tool).hexdigest()}}
    content = build_files("1.25.0", sources, tmp_path / "cache", pinned=pinned)
    assert [m.path for m in content.members] == ["files/calico.yaml", "files/tool.sh"]
    with pytest.raises(OperationError, match="file tool.sh: no sha256 is pinned"):
        build_files("1.25.0", sources, tmp_path / "cache",
                    pinned={"tool.sh": {"url": calico_server.url + "/tool.sh"}})
