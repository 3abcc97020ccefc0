"""Phase ``init``: ``kubeadm init`` on the first control plane, admin kubeconfig fetched.

The configuration (kubeadm_config.init_documents) is written 0600 through stdin and holds
the certificate key, so ``kubeadm init --config F --upload-certs`` needs no secret on its
command line. Once kubeadm has read it, the file is replaced by the same configuration
without the bootstrap token and the certificate key: a record for the operator that
unlocks nothing. Idempotent: a node whose admin.conf exists and whose API server answers is
left alone; one with admin.conf but no answer is reported (never initialised twice).
The certificate key and the time it was uploaded go to the run's state for ``join``.
"""

from __future__ import annotations

import time
from pathlib import Path

from kubeferry.errors import OperationError
from kubeferry.installer import kube_commands as kube
from kubeferry.installer import operations
from kubeferry.installer.context import CertificateKey, InstallContext
from kubeferry.installer.image_names import site_image
from kubeferry.installer.inventory import Host
from kubeferry.installer.kubeadm_config import (
    image_repository,
    init_documents,
    kubeadm_images,
    new_certificate_key,
    new_token,
    render,
)
from kubeferry.installer.operations import Step
from kubeferry.installer.workflow import Phase
from kubeferry.outputs import output_file

INIT_CONFIG = f"{kube.CONFIG_DIR}/init.yaml"
INIT_TIMEOUT = 900.0  # image pulls, certificates, waiting for the control plane (kubeadm: 4 min)


def _hosts(ctx: InstallContext) -> list[Host]:
    return [ctx.inventory.first_control_plane]


def steps(ctx: InstallContext, host: Host) -> list[Step]:
    conn = ctx.conn(host)
    if kube.exists(conn, kube.ADMIN_CONF):
        answers, why = kube.cluster_answers(conn)
        if answers:
            return []
        raise OperationError(f"{host.name}: {kube.ADMIN_CONF} exists but the API server does not answer"
                             f" ({why}); repair the control plane, or `kubeadm reset -f` there and run"
                             " the install again")
    images = ctx.bundle.image_set
    carried = site_images(ctx)  # none: the site's Harbor was seeded from another bundle
    missing = sorted(set(kubeadm_images(images, ctx.inventory.registry)) - carried) if carried else []
    if missing:
        raise OperationError(f"{ctx.bundle.path}: kubeadm {images.tag} would pull {', '.join(missing)},"
                             " which the bundle does not carry; build the bundle again with this"
                             " kubeferry")
    endpoint = ctx.inventory.cluster.control_plane_endpoint
    return [Step(f"kubeadm init: Kubernetes {images.tag}, endpoint {endpoint},"
                 f" images from {image_repository(ctx.inventory.registry)}",
                 run=lambda: _init(ctx, host))]


def site_images(ctx: InstallContext) -> set[str]:
    """The bundle's images under the names this site holds them (Harbor's, or upstream's)."""
    return {site_image(image["name"], ctx.inventory.registry) for image in ctx.bundle.images}


def _init(ctx: InstallContext, host: Host) -> str:
    """Config with fresh secrets written 0600, kubeadm init, the config scrubbed after."""
    conn = ctx.conn(host)
    key, token = new_certificate_key(), new_token()
    images = ctx.bundle.image_set
    documents = init_documents(ctx.inventory, host, images, token=token, certificate_key=key)
    kube.write_secret_file(conn, INIT_CONFIG, render(documents))
    uploaded = time.time()
    try:
        operations.run(conn, f"kubeadm init --config {INIT_CONFIG} --upload-certs --skip-token-print"
                             " --skip-certificate-key-print", secrets=(key, token), timeout=INIT_TIMEOUT)
    finally:
        record = init_documents(ctx.inventory, host, images, token=None, certificate_key=None)
        kube.write_secret_file(conn, INIT_CONFIG, render(record))
    with ctx.state.lock:
        ctx.state.certificate_key = CertificateKey(key, uploaded)
    return f"kubeadm init: control plane up, endpoint {ctx.inventory.cluster.control_plane_endpoint}"


def admin_kubeconfig_path(ctx: InstallContext) -> Path:
    """Where the admin kubeconfig goes on the admin host: beside the inventory file.

    ``cluster.yaml`` -> ``cluster-admin.conf`` in the same directory (stable across runs);
    an inventory that is not a file puts it in the run directory.
    """
    source = Path(ctx.inventory.source)
    if source.suffix in (".yaml", ".yml") and source.parent.is_dir():
        return source.with_name(f"{source.stem}-admin.conf")
    return ctx.run_dir / "admin.conf"


def admin_steps(ctx: InstallContext) -> list[Step]:
    """The admin kubeconfig beside the inventory, when it is not there already."""
    target = admin_kubeconfig_path(ctx)
    return [Step(f"fetch {kube.ADMIN_CONF} to {target}", run=lambda: fetch_admin_kubeconfig(ctx))]


def fetch_admin_kubeconfig(ctx: InstallContext) -> str:
    """Copy /etc/kubernetes/admin.conf to the admin host (mode 0600, written by rename)."""
    host = ctx.inventory.first_control_plane
    result = ctx.conn(host).run(f"cat {kube.ADMIN_CONF}", check=False)  # stdout is never logged
    if not result.ok or not result.stdout:
        raise OperationError(f"{host.name}: cannot read {kube.ADMIN_CONF}: the init phase has not run")
    target = admin_kubeconfig_path(ctx)
    data = result.stdout.encode()
    if target.exists() and target.read_bytes() == data and (target.stat().st_mode & 0o777) == 0o600:
        return ""
    with output_file(target, "admin kubeconfig", mode=0o600) as handle:  # never over a symlink
        handle.write(data)
    return f"admin kubeconfig written to {target} (0600)"


PHASE = Phase(
    name="init",
    short="kubeadm init on the first control plane; admin kubeconfig to the admin host",
    hosts=_hosts,
    steps=steps,
    parallel=False,
    after=admin_steps,
)
