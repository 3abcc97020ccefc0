"""Phase ``join``: the other control planes, then the workers, join with a fresh token.

What a join needs is made once per run on the first control plane, on first use: a new
bootstrap token (``kubeadm token create``, read from stdout and kept in memory), the CA
hash (ca.crt hashed on the admin host) and, for control planes, a certificate key that
is still valid: the one init uploaded if it is younger than CERTIFICATE_KEY_FRESH, else
a new key uploaded with ``kubeadm init phase upload-certs`` (uploaded certs expire after
two hours). Each node gets a JoinConfiguration (0600, removed after the join).

Before the joins and after them, every control plane's apiserver certificate must name the
endpoint and every control plane of the inventory: where one does not (a control plane was
added, a certificate was re-issued without the endpoint's name), it is issued again
(installer/certsans.py). A join that still fails on the certificate of the API server it
reached (kubeadm's ``x509: ...`` at discovery: the endpoint leads to a server kubeferry does
not manage) says so and what to do.

Control planes join one at a time: kubeadm 1.25's stacked-etcd member add is not safe to
race (kubernetes/kubeadm#1646, #2005; etcd adds one member at a time). Workers join in
parallel once every control plane is in. A node with /etc/kubernetes/kubelet.conf has
joined already and is left alone.
"""

from __future__ import annotations

import re
import shlex
import time

from kubeferry.errors import OperationError
from kubeferry.installer import certsans, operations
from kubeferry.installer import kube_commands as kube
from kubeferry.installer.context import CertificateKey, InstallContext, JoinMaterial
from kubeferry.installer.inventory import Host
from kubeferry.installer.kubeadm_config import init_documents, join_document, new_certificate_key, render
from kubeferry.installer.operations import Step
from kubeferry.installer.ssh import CommandFailed
from kubeferry.installer.workflow import HostGroup, Phase

JOIN_CONFIG = f"{kube.CONFIG_DIR}/join.yaml"
UPLOAD_CONFIG = f"{kube.CONFIG_DIR}/upload-certs.yaml"
JOIN_TIMEOUT = 900.0
TOKEN_TTL = "2h0m0s"
CERTIFICATE_KEY_FRESH = 110 * 60  # seconds: re-upload before the 2 h expiry comes near
_TOKEN = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")


def _groups(ctx: InstallContext) -> list[HostGroup]:
    return [HostGroup(ctx.inventory.control_planes[1:], parallel=False),
            HostGroup(ctx.inventory.workers, parallel=True)]


def _create_token(ctx: InstallContext) -> str:
    conn = ctx.conn(ctx.inventory.first_control_plane)
    result = operations.run(conn, f"kubeadm token create --ttl {TOKEN_TTL} --description"
                            f" {shlex.quote('kubeferry join')}", timeout=120)
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    token = lines[-1] if lines else ""
    if not _TOKEN.match(token):
        raise OperationError(f"{conn.host.name}: `kubeadm token create` printed no token")
    return token


def _upload_certificates(ctx: InstallContext) -> CertificateKey:
    """A new certificate key, with the control-plane certificates uploaded under it."""
    first = ctx.inventory.first_control_plane
    conn = ctx.conn(first)
    key = new_certificate_key()
    documents = init_documents(ctx.inventory, first, ctx.bundle.image_set, token=None,
                               certificate_key=key)
    kube.write_secret_file(conn, UPLOAD_CONFIG, render(documents))
    uploaded = time.time()
    try:
        operations.run(conn, f"kubeadm init phase upload-certs --upload-certs --config {UPLOAD_CONFIG}"
                             " --skip-certificate-key-print", secrets=(key,), timeout=300)
    finally:
        kube.remove(conn, UPLOAD_CONFIG)
    ctx.log(first)("uploaded the control-plane certificates under a new certificate key")
    return CertificateKey(key, uploaded)


def _material(ctx: InstallContext, control_plane: bool) -> tuple[JoinMaterial, str | None]:
    """Token and CA hash, and for a control plane a fresh certificate key; made once, on use."""
    state = ctx.state
    with state.lock:  # the first joiner makes them; the others wait and reuse them
        if state.join_material is None:
            conn = ctx.conn(ctx.inventory.first_control_plane)
            state.join_material = JoinMaterial(token=_create_token(ctx),
                                               ca_hash=kube.read_ca_cert_hash(conn))
        if not control_plane:
            return state.join_material, None
        record = state.certificate_key
        if record is None or time.time() - record.uploaded > CERTIFICATE_KEY_FRESH:
            record = state.certificate_key = _upload_certificates(ctx)
        return state.join_material, record.key


def _role(host: Host) -> str:
    return "control plane" if host.is_control_plane else "worker"


def steps(ctx: InstallContext, host: Host) -> list[Step]:
    if kube.exists(ctx.conn(host), kube.KUBELET_CONF):
        return []
    return [Step(f"kubeadm join as a {_role(host)} through {ctx.inventory.cluster.control_plane_endpoint}",
                 run=lambda: _join(ctx, host))]


def _join(ctx: InstallContext, host: Host) -> str:
    conn = ctx.conn(host)
    material, certificate_key = _material(ctx, host.is_control_plane)
    document = join_document(ctx.inventory, host, token=material.token, ca_hash=material.ca_hash,
                             certificate_key=certificate_key)
    kube.write_secret_file(conn, JOIN_CONFIG, render([document]))
    try:
        operations.run(conn, f"kubeadm join --config {JOIN_CONFIG}", timeout=JOIN_TIMEOUT,
                       secrets=(material.token, certificate_key or ""))
    except CommandFailed as error:
        if "couldn't validate the identity of the API Server" not in str(error) or "x509: " not in str(error):
            raise  # not discovery refusing the certificate of the API server it reached
        advice = certificate_advice(ctx.inventory.cluster.control_plane_endpoint)
        raise OperationError(f"{error}; {advice}") from None
    finally:
        kube.remove(conn, JOIN_CONFIG)
    return f"joined as a {_role(host)}"


def certificate_advice(endpoint: str) -> str:
    """What to do when discovery refused the certificate of the API server ``endpoint`` led to."""
    host = endpoint.rpartition(":")[0].strip("[]") or endpoint
    return (f"the API server this node reached through {endpoint} is not one of the inventory's control"
            f" planes, whose certificates name {host}: make {host} lead this node to them (DNS,"
            " /etc/hosts, the load balancer), or have that server's certificate name it")


PHASE = Phase(
    name="join",
    short="join the other control planes (one by one), then the workers (in parallel)",
    groups=_groups,
    steps=steps,
    before=certsans.before_joins,  # the joins go through the endpoint: its name in every certificate
    after=certsans.after_joins,  # a control plane added: the others' apiserver certificates name it
)
