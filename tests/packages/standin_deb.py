"""Stand-in Kubernetes .debs (built with the real ``dpkg-deb``) in a flat apt repository
signed like pkgs.k8s.io's (a clearsigned InRelease), for the Debian test.

The Depends lines are pkgs.k8s.io's, so the closure pulls real packages from Debian.
When ``lab/standin_packages.py`` lands (branch ``doubles``), its ``build_debs`` replaces
``build_kubernetes_debs``.
"""

from __future__ import annotations

import gzip
import hashlib
import subprocess
from pathlib import Path

from .standin_rpm import SigningKey

KUBELET_DEPENDS = ("iptables (>= 1.4.21), kubernetes-cni (>= 1.1.1), iproute2, socat, "
                   "util-linux, mount, ebtables, ethtool, conntrack")
KUBEADM_DEPENDS = ("kubelet (>= 1.19.0), kubectl (>= 1.13.0), kubernetes-cni (>= 1.1.1), "
                   "cri-tools (>= 1.25.0)")


def build_deb(name: str, version: str, arch: str, depends: str, out_dir: Path,
              work: Path) -> Path:
    root = work / f"{name}_{version}_{arch}"
    (root / "DEBIAN").mkdir(parents=True)
    binary = root / "usr" / "bin" / name
    binary.parent.mkdir(parents=True)
    binary.write_text(f"#!/bin/sh\necho {name} {version}\n")
    binary.chmod(0o755)
    control = [f"Package: {name}", f"Version: {version}", f"Architecture: {arch}",
               "Maintainer: kubeferry tests <test@kubeferry.invalid>", "Section: admin",
               "Priority: optional"]
    if depends:
        control.append(f"Depends: {depends}")
    control.append(f"Description: kubeferry stand-in for {name}\n A test package.")
    (root / "DEBIAN" / "control").write_text("\n".join(control) + "\n")
    target = out_dir / f"{name}_{version}_{arch}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root),
                    str(target)], check=True, capture_output=True, timeout=120)
    return target


def build_kubernetes_debs(out_dir: Path, work: Path, arch: str = "amd64") -> list[Path]:
    """kubeadm/kubelet/kubectl 1.24.17, 1.25.0 and 1.25.1 plus cri-tools and kubernetes-cni."""
    out_dir.mkdir(parents=True, exist_ok=True)
    debs = [
        build_deb("kubernetes-cni", "1.1.1-1.1", arch, "", out_dir, work),
        build_deb("kubernetes-cni", "1.2.0-2.1", arch, "", out_dir, work),
        build_deb("cri-tools", "1.25.0-1.1", arch, "", out_dir, work),
        build_deb("cri-tools", "1.26.0-1.1", arch, "", out_dir, work),
    ]
    for version in ("1.24.17-1.1", "1.25.0-1.1", "1.25.1-1.1"):
        debs += [
            build_deb("kubelet", version, arch, KUBELET_DEPENDS, out_dir, work),
            build_deb("kubectl", version, arch, "", out_dir, work),
            build_deb("kubeadm", version, arch, KUBEADM_DEPENDS, out_dir, work),
        ]
    return debs


def _field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "--field", str(deb), name], check=True,
                          capture_output=True, text=True, timeout=60).stdout.strip()


def make_flat_repo(repo: Path, debs: list[Path], key: SigningKey | None) -> None:
    """Packages, Packages.gz, Release and (signed with ``key``) InRelease for ``debs``."""
    stanzas = []
    for deb in sorted(debs):
        control = subprocess.run(["dpkg-deb", "--info", str(deb), "control"], check=True,
                                 capture_output=True, text=True, timeout=60).stdout.strip()
        data = deb.read_bytes()
        stanzas.append("\n".join([
            control.split("\nDescription:")[0],
            f"Filename: ./{deb.relative_to(repo)}",
            f"Size: {len(data)}",
            f"MD5sum: {hashlib.md5(data).hexdigest()}",
            f"SHA256: {hashlib.sha256(data).hexdigest()}",
            f"Description: {_field(deb, 'Description').splitlines()[0]}",
        ]))
    packages = ("\n\n".join(stanzas) + "\n").encode()
    indexes = {"Packages": packages, "Packages.gz": gzip.compress(packages, mtime=0)}
    lines = ["Origin: kubeferry-test", "Label: stand-in pkgs.k8s.io", "Architectures: amd64",
             "Date: Sat, 01 Jan 2022 00:00:00 UTC", "SHA256:"]
    for name, data in indexes.items():
        (repo / name).write_bytes(data)
        lines.append(f" {hashlib.sha256(data).hexdigest()} {len(data)} {name}")
    (repo / "Release").write_text("\n".join(lines) + "\n")
    if key is not None:
        signed = key._gpg("--clearsign", "--local-user", key.name, "--output", "-",
                          str(repo / "Release"))
        (repo / "InRelease").write_bytes(signed.stdout)
