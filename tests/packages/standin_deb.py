"""Stand-in Kubernetes .debs (the lab's, lab/standin_packages.py, wired like pkgs.k8s.io's)
in a flat apt repository signed like pkgs.k8s.io's (a clearsigned InRelease).

Their Depends are the real packages', so the closure pulls real packages from Debian.
"""

from __future__ import annotations

import gzip
import hashlib
import subprocess
from pathlib import Path

from kubeferry.lab.standin_packages import build_debs

from .standin_rpm import SigningKey


def build_kubernetes_debs(out_dir: Path, versions: tuple[str, ...] = ("1.24.17", "1.25.0",
                                                                      "1.25.1")) -> list[Path]:
    """The lab's stand-in kubeadm/kubelet/kubectl/cri-tools/kubernetes-cni for several
    releases in one directory (companions shared between releases are built once)."""
    debs: set[Path] = set()
    for version in versions:
        debs.update(build_debs(version, out_dir))
    return sorted(debs)


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
