"""The install, phase by phase, in the order they run (``kubeferry install --only/--skip``).

Each module holds one phase (kubeadm's one-file-per-phase) and exports ``PHASE``.
"""

from __future__ import annotations

from kubeferry.installer.workflow import Phase


def all_phases() -> list[Phase]:
    """Every phase, in order. Imported lazily so ``--help`` stays fast."""
    from kubeferry.installer.phases import cni, distribute, init, join, loadbalancer, registry, verify

    return [distribute.PHASE, registry.PHASE, loadbalancer.PHASE, init.PHASE, join.PHASE, cni.PHASE,
            verify.PHASE]
