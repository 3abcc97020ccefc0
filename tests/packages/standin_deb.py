"""Stand-in Kubernetes .debs (the lab's, lab/standin_packages.py, wired like pkgs.k8s.io's),
for a flat apt repository (``kubeferry.lab.upstream_packages.flat_apt_repo``).

Their Depends are the real packages', so the closure pulls real packages from Debian.
"""

from __future__ import annotations

from pathlib import Path

from kubeferry.lab.standin_packages import build_debs


def build_kubernetes_debs(out_dir: Path, versions: tuple[str, ...] = ("1.24.17", "1.25.0",
                                                                      "1.25.1")) -> list[Path]:
    """The lab's stand-in kubeadm/kubelet/kubectl/cri-tools/kubernetes-cni for several
    releases in one directory (companions shared between releases are built once)."""
    debs: set[Path] = set()
    for version in versions:
        debs.update(build_debs(version, out_dir))
    return sorted(debs)
