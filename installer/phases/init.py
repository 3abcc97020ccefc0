"""Phase ``init``: ``kubeadm init`` on the first control plane, admin kubeconfig fetched.

The configuration (kubeadm_config.init_documents) is written 0600 through stdin and holds
the certificate key, so ``kubeadm init --config F --upload-certs`` needs no secret on its
command line. Once kubeadm has read it, the file is replaced by the same configuration
without the bootstrap token and the certificate key: a record for the operator that
unlocks nothing. Idempotent: a node whose admin.conf exists and whose API server answers is
left alone; one with admin.conf but no answer is reported (never initialised twice).
The certificate key and the time it was uploaded go to ``ctx.state`` for ``join``.
"""

from __future__ import annotations

import time
from pathlib import Path

from kubeferry.errors import OperationError
from kubeferry.installer import kube_commands as kube
from kubeferry.installer.context import InstallContext
from kubeferry.installer.inventory import Host
from kubeferry.installer.kubeadm_config import (
    image_repository,
    init_documents,
    new_certificate_key,
    new_token,
    render,
)
from kubeferry.installer.workflow import Phase
from kubeferry.outputs import output_file
from kubeferry.versions import image_set

INIT_CONFIG = f"{kube.CONFIG_DIR}/init.yaml"
INIT_TIMEOUT = 900.0  # image pulls, certificates, waiting for the control plane (kubeadm: 4 min)
CERTIFICATE_KEY = "certificate_key"  # ctx.state: {"key": ..., "uploaded": epoch seconds}


def _hosts(ctx: InstallContext) -> list[Host]:
    return [ctx.inventory.first_control_plane]


def plan(ctx: InstallContext, host: Host) -> list[str]:
    if kube.exists(ctx.conn(host), kube.ADMIN_CONF):
        return []
    images = image_set(ctx.bundle.kubernetes)
    return [f"kubeadm init: Kubernetes {images.tag}, endpoint {ctx.inventory.cluster.control_plane_endpoint},"
            f" images from {image_repository(ctx.inventory.registry)}"]


def apply(ctx: InstallContext, host: Host) -> str:
    conn = ctx.conn(host)
    if kube.exists(conn, kube.ADMIN_CONF):
        answers, why = kube.cluster_answers(conn)
        if answers:
            return ""
        raise OperationError(f"{host.name}: {kube.ADMIN_CONF} exists but the API server does not answer"
                             f" ({why}); repair the control plane, or `kubeadm reset -f` there and run"
                             " the install again")
    key, token = new_certificate_key(), new_token()
    images = image_set(ctx.bundle.kubernetes)
    documents = init_documents(ctx.inventory, host, images, token=token, certificate_key=key)
    kube.write_secret_file(conn, INIT_CONFIG, render(documents))
    uploaded = time.time()
    try:
        kube.run(conn, f"kubeadm init --config {INIT_CONFIG} --upload-certs --skip-token-print"
                       " --skip-certificate-key-print", secrets=(key, token), timeout=INIT_TIMEOUT)
    finally:
        record = init_documents(ctx.inventory, host, images, token=None, certificate_key=None)
        kube.write_secret_file(conn, INIT_CONFIG, render(record))
    with ctx.state_lock:
        ctx.state[CERTIFICATE_KEY] = {"key": key, "uploaded": uploaded}
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


def admin_plan(ctx: InstallContext) -> list[str]:
    return [f"fetch {kube.ADMIN_CONF} to {admin_kubeconfig_path(ctx)}"]


PHASE = Phase(
    name="init",
    short="kubeadm init on the first control plane; admin kubeconfig to the admin host",
    hosts=_hosts,
    apply=apply,
    plan=plan,
    parallel=False,
    admin=fetch_admin_kubeconfig,
    admin_plan=admin_plan,
)
