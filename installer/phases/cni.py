"""Phase ``cni``: calico from the bundle, its images on the site registry, applied.

calico.yaml is read from the bundle on the admin host (a ``files/`` member, checked
against its sha256), rewritten by ``calico.rewrite`` (images -> site names, the IPv4 pool
-> podSubnet) and piped to ``kubectl apply -f -`` on the first control plane, unless
``kubectl diff -f -`` finds every object already as apply would leave it: apply's own
"configured" is not proof of a change (a PodDisruptionBudget's selector is patched with
strategy "replace", so apply patches it, and says "configured", on every run).
"""

from __future__ import annotations

from kubeferry.errors import InputError
from kubeferry.installer import calico
from kubeferry.installer import kube_commands as kube
from kubeferry.installer.context import InstallContext
from kubeferry.installer.image_names import site_image
from kubeferry.installer.inventory import Host
from kubeferry.installer.operations import Step
from kubeferry.installer.workflow import Phase

CALICO_FILE = "calico.yaml"


def calico_member(ctx: InstallContext) -> dict:
    """The bundle member holding calico.yaml (metadata ``files`` names it)."""
    rows = (ctx.bundle.metadata.get("files") or {}).get("files") or []
    path = next((row["path"] for row in rows if row.get("name") == CALICO_FILE), f"files/{CALICO_FILE}")
    member = ctx.bundle.member(path)
    if member is None:
        raise InputError(f"{ctx.bundle.path}: the bundle holds no {path}; build it with --include files")
    return member


def site_manifest(ctx: InstallContext) -> str:
    """calico.yaml as this site applies it (verified bytes from the bundle, rewritten)."""
    data = ctx.bundle.read_member(calico_member(ctx)["path"])
    registry = ctx.inventory.registry
    return calico.rewrite(data.decode(), ctx.inventory.cluster.pod_subnet,
                          lambda name: site_image(name, registry))


def _hosts(ctx: InstallContext) -> list[Host]:
    return [ctx.inventory.first_control_plane]


def steps(ctx: InstallContext, host: Host) -> list[Step]:
    """``kubectl apply`` of the site's calico.yaml: kubectl itself finds what is unchanged."""
    manifest = site_manifest(ctx)
    images = sorted(set(calico.images(manifest)))
    return [Step(f"kubectl apply calico ({len(images)} images: {', '.join(images)};"
                 f" pool {ctx.inventory.cluster.pod_subnet})", run=lambda: _apply(ctx, host, manifest))]


def _apply(ctx: InstallContext, host: Host, manifest: str) -> str:
    conn = ctx.conn(host)
    # kubectl diff: exit 0 = no differences, 1 = differences, >1 = it could not tell (then apply)
    diff = conn.run(f"{kube.KUBECTL} diff -f -", stdin=manifest.encode(), timeout=300, check=False)
    if diff.rc == 0:
        return ""
    result = kube.kubectl(conn, "apply -f -", stdin=manifest.encode(), timeout=300)
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    changed = [line for line in lines if not line.endswith(" unchanged")]
    if not changed:
        return ""
    return f"calico applied: {len(changed)} of {len(lines)} objects created or configured"


PHASE = Phase(
    name="cni",
    short="calico from the bundle, images from the site registry, pool = podSubnet",
    hosts=_hosts,
    steps=steps,
    parallel=False,
    inputs=lambda ctx, host: [ctx.inventory.cluster.pod_subnet,
                              ctx.inventory.registry.repository if ctx.inventory.registry else None],
)
