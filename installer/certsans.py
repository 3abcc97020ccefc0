"""Around the joins: every control plane's apiserver certificate names the site as it is now.

kubeferry's ClusterConfiguration lists, in ``apiServer.certSANs``, the endpoint's name, the
VIP and every control plane's name and address. Two ways a certificate comes to lack one: a
control plane added to the inventory is in the certificate it gets when it joins, but not in
those the others made before it; and a site that re-issued a certificate by hand may have
forgotten a name. The endpoint's name matters most: every join's discovery, and kubeadm's
own admin.conf on the control planes (``kubeadm token create``), reach the API server
through it and check its certificate for it, so a certificate without it fails them all
(``x509: certificate is valid for ..., not NAME``). Hence the check runs before the joins
(``before``: whatever lacks a name is re-issued first) and again after them (``after``: a
control plane that joined in this run, from a stored configuration older than the
inventory).

Where a certificate lacks a name or address of the inventory, kubeadm's way (its
"Certificate Management" page) is followed: on each such control plane, one at a time, the
old apiserver pair is moved aside (kubeadm keeps a certificate that exists and refuses one
that lacks a SAN), ``kubeadm init phase certs apiserver --config`` issues the new one from
the cluster CA and the kube-apiserver static pod restarts; the next node waits until its
/healthz answers. Then the ClusterConfiguration is stored in the kubeadm-config ConfigMap
(``kubeadm init phase upload-config kubeadm --config``, so later joins and upgrades keep
it): last, because that command reaches the API through admin.conf's endpoint, whose
certificate may be the one being fixed. Without the CA's key on a control plane (an
external CA), nothing can be re-issued there: the run stops saying what the site's CA must
issue.
"""

from __future__ import annotations

import shlex
import time

from kubeferry.errors import KubeferryError, OperationError
from kubeferry.installer import controlplane, operations
from kubeferry.installer import kube_commands as kube
from kubeferry.installer.context import InstallContext
from kubeferry.installer.inventory import Host
from kubeferry.installer.kubeadm_config import cert_sans, init_documents, render
from kubeferry.installer.operations import Step

CONFIG = f"{kube.CONFIG_DIR}/certsans.yaml"
BACKUP_DIR = "/var/lib/kubeferry/backup"  # old apiserver pairs, kept (0700)
PKI = "/etc/kubernetes/pki"
CA_KEY = f"{PKI}/ca.key"  # absent with an external CA: kubeadm then issues nothing


def steps(ctx: InstallContext) -> list[Step]:
    """Re-issue where a certificate lacks a SAN, then store the configuration ([] if none lacks one)."""
    wanted = cert_sans(ctx.inventory)
    lacking = []
    for host in ctx.inventory.control_planes:
        missing = controlplane.missing_sans(ctx, host, wanted)
        if missing:  # None: no certificate yet (a plan before init or join); []: it has them all
            lacking.append((host, missing))
    if not lacking:
        return []
    for host, missing in lacking:
        if not kube.exists(ctx.conn(host), CA_KEY):
            raise OperationError(
                f"{host.name}: its apiserver certificate lacks {', '.join(missing)} (joins through"
                f" {ctx.inventory.cluster.control_plane_endpoint} need it) and {CA_KEY} is not there (an"
                f" external CA): have the site's CA issue {PKI}/apiserver.crt for {', '.join(wanted)}"
                " (and the usual kubernetes.default names), restart its kube-apiserver, then run again")
    planned = [Step(f"re-issue the apiserver certificate on {host.name} (it lacks {', '.join(missing)})"
                    " and restart its kube-apiserver", run=lambda host=host: _reissue(ctx, host))
               for host, missing in lacking]
    first = ctx.inventory.first_control_plane
    planned.append(Step(f"store apiServer.certSANs ({', '.join(wanted)}) in the kubeadm-config ConfigMap",
                        run=lambda: _upload_config(ctx, first)))
    return planned


def before_joins(ctx: InstallContext) -> list[Step]:
    """Before the joins: they go through the endpoint, whose name every certificate must hold."""
    return steps(ctx)


def after_joins(ctx: InstallContext) -> list[Step]:
    """After the joins: control planes that joined in this run.

    A plan joins nothing, so it would find what ``before_joins`` found, which a run fixes
    once: the plan shows it once, before the joins.
    """
    return [] if ctx.options.plan else steps(ctx)


def _config(ctx: InstallContext, host: Host) -> str:
    documents = init_documents(ctx.inventory, host, ctx.bundle.image_set, token=None, certificate_key=None)
    return render(documents)


def _upload_config(ctx: InstallContext, host: Host) -> str:
    conn = ctx.conn(host)
    kube.write_secret_file(conn, CONFIG, _config(ctx, host))
    try:
        operations.run(conn, f"kubeadm init phase upload-config kubeadm --config {CONFIG}", timeout=120)
    finally:
        kube.remove(conn, CONFIG)
    return "apiServer.certSANs stored in kubeadm-config"


def _reissue(ctx: InstallContext, host: Host) -> str:
    conn = ctx.conn(host)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    pair = [f"{PKI}/apiserver.crt", f"{PKI}/apiserver.key"]
    saved = [f"{BACKUP_DIR}/apiserver-{stamp}.crt", f"{BACKUP_DIR}/apiserver-{stamp}.key"]
    kube.write_secret_file(conn, CONFIG, _config(ctx, host))
    conn.run(f"mkdir -p {BACKUP_DIR} && chmod 0700 {BACKUP_DIR} && "
             + " && ".join(f"mv -f {shlex.quote(a)} {shlex.quote(b)}" for a, b in zip(pair, saved)))
    try:
        operations.run(conn, f"kubeadm init phase certs apiserver --config {CONFIG}", timeout=120)
    except KubeferryError:
        conn.run(" && ".join(f"cp -p {shlex.quote(b)} {shlex.quote(a)}" for a, b in zip(pair, saved)),
                 check=False)  # the old pair back: the API server keeps serving with it
        raise
    finally:
        kube.remove(conn, CONFIG)
    controlplane.restart_static_pods(ctx, host, ("kube-apiserver",))
    return f"{host.name}: apiserver certificate re-issued (old pair in {BACKUP_DIR}), API server restarted"
