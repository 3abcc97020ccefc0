"""Stand-in upstream yum repositories for an EL8 node, built once per session and served
over HTTP on loopback: base (BaseOS), updates with modules (AppStream), Docker CE and the
Kubernetes repository (the lab's stand-in kubeadm/kubelet/kubectl/cri-tools/kubernetes-cni
from lab/standin_packages.py, legacy-yum style `kubeadm-1.25.0-0`), every package signed
with a throwaway key."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubeferry.bundler.content import Content
from kubeferry.bundler.sources import Sources
from kubeferry.lab.standin_packages import build_rpms as lab_build_rpms

from .httpserver import StaticServer
from .standin_rpm import RpmSpec, SigningKey, build_rpms, make_repo

K8S_VERSIONS = ("1.24.17", "1.25.0", "1.25.1")


def el8_standin_specs() -> dict[str, list[RpmSpec]]:
    """Packages named and wired like Rocky 8's and pkgs.k8s.io's (with stand-in content)."""
    baseos = [
        RpmSpec("filesystem", "3.8", "6.el8"),
        RpmSpec("glibc", "2.28", "100.el8", requires=["glibc-common = 2.28-100.el8"],
                provides=["libc.so.6()(64bit)"], files=["/usr/lib64/libc.so.6"]),
        RpmSpec("glibc", "2.28", "100.el8", arch="i686", files=["/usr/lib/libc.so.6"]),
        RpmSpec("glibc-common", "2.28", "100.el8", requires=["glibc = 2.28-100.el8"]),
        RpmSpec("bash", "4.4.20", "4.el8", provides=["/bin/sh"], files=["/usr/bin/bash"]),
        RpmSpec("util-linux", "2.32.1", "42.el8", files=["/usr/bin/mount"]),
        RpmSpec("iproute", "5.18.0", "1.el8", files=["/usr/sbin/ip"]),
        RpmSpec("iptables", "1.8.4", "24.el8", files=["/usr/sbin/iptables"]),
        RpmSpec("iptables-ebtables", "1.8.4", "24.el8", provides=["ebtables = 2.0.10"],
                files=["/usr/sbin/ebtables"]),
        RpmSpec("ethtool", "5.13", "2.el8", epoch=2, files=["/usr/sbin/ethtool"]),
        RpmSpec("xz", "5.2.4", "4.el8", files=["/usr/bin/xz"]),  # a file provide in primary
        RpmSpec("libnetfilter_cthelper", "1.0.0", "15.el8",
                files=["/usr/lib64/libnetfilter_cthelper.so.0"]),
        # Virtual provide (conntrack) and a file dependency outside primary.xml's lists.
        RpmSpec("conntrack-tools", "1.4.4", "11.el8", provides=["conntrack = 1.0-1"],
                requires=["/usr/lib64/libnetfilter_cthelper.so.0"],
                files=["/usr/sbin/conntrack"]),
        # the rest of the node tools, so the default package set resolves (CLI tests)
        RpmSpec("ipvsadm", "1.31", "1.el8", files=["/usr/sbin/ipvsadm"]),
        RpmSpec("ipset", "7.1", "1.el8", files=["/usr/sbin/ipset"]),
        RpmSpec("chrony", "4.2", "1.el8", files=["/usr/sbin/chronyd"]),
        RpmSpec("curl", "7.61.1", "34.el8", files=["/usr/bin/curl"]),
        RpmSpec("tar", "1.30", "9.el8", epoch=2, files=["/usr/bin/tar"]),
        RpmSpec("python3-dnf-plugin-versionlock", "4.0.21", "19.el8_8", arch="noarch"),
    ]
    appstream = [
        RpmSpec("glibc", "2.28", "225.el8", requires=["glibc-common = 2.28-225.el8"],
                provides=["libc.so.6()(64bit)"], files=["/usr/lib64/libc.so.6"]),
        RpmSpec("glibc-common", "2.28", "225.el8", requires=["glibc = 2.28-225.el8"]),
        # Built against a newer glibc than a minimal node has.
        RpmSpec("socat", "1.7.4.1", "1.el8", requires=["glibc >= 2.28-200.el8"],
                files=["/usr/bin/socat"]),
        RpmSpec("socat", "1.8.0.0", "1.module+el8.9.0+1+aaaa", files=["/usr/bin/socat"]),
        RpmSpec("container-selinux", "2.205.0", "2.module+el8.9.0+2+bbbb", epoch=2,
                arch="noarch"),
        RpmSpec("container-selinux", "2.100.0", "1.el8", epoch=2, arch="noarch"),
        RpmSpec("haproxy", "1.8.27", "5.el8", files=["/usr/sbin/haproxy"]),
        RpmSpec("keepalived", "2.1.5", "9.el8", files=["/usr/sbin/keepalived"]),
        # The admin host's Python (packages.yaml `admin`): AppStream's python39 module stream.
        RpmSpec("python39", "3.9.20", "1.module+el8.10.0+3+cccc",
                requires=["python39-libs = 3.9.20-1.module+el8.10.0+3+cccc"],
                files=["/usr/bin/python3.9"]),
        RpmSpec("python39-libs", "3.9.20", "1.module+el8.10.0+3+cccc",
                requires=["glibc >= 2.28"], files=["/usr/lib64/libpython3.9.so.1.0"]),
    ]
    docker = [
        RpmSpec("containerd.io", "1.6.6", "3.1.el8",
                requires=["container-selinux >= 2:2.74", "/usr/bin/xz"],
                provides=["runc"], files=["/usr/bin/containerd", "/usr/bin/runc"]),
    ]
    # The Kubernetes packages themselves come from the lab's stand-ins (el8_standin).
    kubernetes = [
        RpmSpec("broken-tool", "1.0", "1", requires=["broken-lib"]),
        RpmSpec("broken-lib", "1.0", "1", requires=["does-not-exist >= 2"]),
    ]
    return {"el8-baseos": baseos, "el8-appstream": appstream, "docker-ce": docker,
            "kubernetes": kubernetes}


MODULES_YAML = """\
---
document: modulemd
version: 2
data:
  name: container-tools
  stream: rhel8
  version: 8090020230101
  context: aaaa
  summary: container tools
  description: stand-in
  license: {module: [MIT]}
  artifacts:
    rpms:
    - container-selinux-2:2.205.0-2.module+el8.9.0+2+bbbb.noarch
---
document: modulemd
version: 2
data:
  name: socat
  stream: devel
  version: 8090020230101
  context: bbbb
  summary: socat
  description: stand-in
  license: {module: [MIT]}
  artifacts:
    rpms:
    - socat-0:1.8.0.0-1.module+el8.9.0+1+aaaa.x86_64
---
document: modulemd
version: 2
data:
  name: python39
  stream: "3.9"
  version: 8100020240101
  context: cccc
  summary: Python 3.9
  description: stand-in
  license: {module: [MIT]}
  artifacts:
    rpms:
    - python39-0:3.9.20-1.module+el8.10.0+3+cccc.x86_64
    - python39-libs-0:3.9.20-1.module+el8.10.0+3+cccc.x86_64
---
document: modulemd-defaults
version: 1
data:
  module: container-tools
  stream: rhel8
---
document: modulemd-defaults
version: 1
data:
  module: python39
  stream: "3.9"
...
"""


@dataclass
class StandinRepos:
    root: Path  # served directory: <repo>/..., key.asc
    url: str
    key: str  # armored public key
    rpms: dict[str, list[Path]]
    gpg_home: Path  # where the signing key lives (SigningKey(gpg_home, create=False) signs more)

    def sources(self) -> Sources:
        repositories = {name: f"{self.url}/{name}" for name in self.rpms}
        for key_name in ("el8-gpgkey", "docker-ce-gpgkey", "kubernetes-gpgkey"):
            repositories[key_name] = f"{self.url}/key.asc"
        return Sources(repositories=repositories)


@pytest.fixture(scope="session")
def el8_standin(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("el8-standin")
    work = tmp_path_factory.mktemp("rpmbuild")
    key = SigningKey(tmp_path_factory.mktemp("gpg") / "home")
    try:
        rpms = {}
        for name, specs in el8_standin_specs().items():
            rpms[name] = build_rpms(specs, root / name, work)
            if name == "kubernetes":  # kubeadm, kubelet, kubectl, cri-tools, kubernetes-cni
                for version in K8S_VERSIONS:
                    rpms[name] += lab_build_rpms(version, root / name / "Packages")
                rpms[name] = sorted(set(rpms[name]))
            key.sign_rpms(rpms[name])
            make_repo(root / name, MODULES_YAML if name == "el8-appstream" else None)
        (root / "key.asc").write_bytes(key.public)
    finally:
        key.close()
        shutil.rmtree(work, ignore_errors=True)
    with StaticServer(root) as server:
        yield StandinRepos(root=root, url=server.url, key=key.public.decode(), rpms=rpms,
                           gpg_home=key.home)


def materialize(contents: list[Content], target: Path) -> Path:
    """Write every member where the bundle reader would put it, checking each sha256."""
    for content in contents:
        for member in content.members:
            path = target / member.path
            path.parent.mkdir(parents=True, exist_ok=True)
            data = member.source.read_bytes()
            assert hashlib.sha256(data).hexdigest() == member.sha256, member.path
            assert len(data) == member.size, member.path
            path.write_bytes(data)
    return target
