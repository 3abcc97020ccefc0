"""Phase ``registry``: seed the site's Harbor from the bundle, from the admin host.

Projects are created through the Harbor API if missing, then every bundle image is
pushed under the names ``harbor_name`` gives (what kubeadm's ``imageRepository``, the
coredns path rule, containerd's ``sandbox_image`` and calico.yaml ask for), blobs read in
place from the bundle, existing ones skipped by HEAD. Nothing runs on the nodes, so the
phase leaves no marker: a re-run asks Harbor again, and finds nothing to send. With
``registry: none`` the phase has nothing to do (images reach the nodes by ``ctr import``).
"""

from __future__ import annotations

from kubeferry.errors import InputError
from kubeferry.installer.context import InstallContext
from kubeferry.installer.harbor_seed import plan_seed, seed
from kubeferry.installer.inventory import RegistrySettings
from kubeferry.installer.operations import Step
from kubeferry.installer.workflow import ADMIN, Phase

WORKERS = 4  # parallel uploads: Harbor, not the admin host, is usually the limit


def _password(ctx: InstallContext, settings: RegistrySettings) -> str:
    password = ctx.secret(settings.password)
    if not password:
        raise InputError(f"{ctx.inventory.source}: registry.passwordFrom is not set: kubeferry needs"
                         f" the password of Harbor user {settings.username} to create projects and push")
    return password


def seed_steps(ctx: InstallContext) -> list[Step]:
    """One step, the seeding. A plan asks Harbor what it would send (projects, manifests,
    blobs: HEAD requests only); a run does not ask twice: seeding skips what is there."""
    settings = ctx.inventory.registry
    if settings is None:
        return []
    describe = f"push the bundle's images to {settings.url} (what is there is skipped)"
    if ctx.options.plan:
        planned = plan_seed(ctx.bundle, settings, _password(ctx, settings), workers=WORKERS).lines()
        if not planned:
            return []
        describe = "; ".join(planned)
    return [Step(describe, run=lambda: _seed(ctx, settings))]


def _seed(ctx: InstallContext, settings: RegistrySettings) -> str:
    result = seed(ctx.bundle, settings, _password(ctx, settings), workers=WORKERS,
                  progress=ctx.progress("registry"))
    log = ctx.log(ADMIN)
    for warning in result.warnings:
        log(f"warning: {warning}")
    log(f"registry: {result.summary()}")
    return result.summary() if result.changed else ""


PHASE = Phase(
    name="registry",
    short="seed Harbor: create the project, push every bundle image (existing blobs skipped)",
    marker=False,  # no per-host work: everything happens on the admin host
    after=seed_steps,
)
