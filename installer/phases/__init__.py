"""The install, phase by phase, in the order they run (``kubeferry install --only/--skip``).

Each module holds one phase (kubeadm's one-file-per-phase) and exports ``PHASE``.
"""

from __future__ import annotations

from kubeferry.installer.workflow import Phase


def all_phases() -> list[Phase]:
    """Every phase, in order. Imported lazily so ``--help`` stays fast."""
    from kubeferry.installer.phases import (
        cni,
        containerd,
        distribute,
        images,
        init,
        join,
        kernel,
        loadbalancer,
        os_setup,
        packages,
        preflight,
        registry,
        verify,
    )

    return [preflight.PHASE, distribute.PHASE, os_setup.PHASE, packages.PHASE, kernel.PHASE,
            containerd.PHASE, images.PHASE, registry.PHASE, loadbalancer.PHASE, init.PHASE,
            join.PHASE, cni.PHASE, verify.PHASE]
