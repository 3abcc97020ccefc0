"""kubeadm and kubectl on a node, with secrets kept out of logs, errors and command lines.

Secrets (bootstrap tokens, certificate keys) travel only in files written 0600 through
stdin; commands that print them (``kubeadm token create``) are read from stdout, which
the SSH layer never logs. Error messages built here are scrubbed of every secret passed.
"""

from __future__ import annotations

import hashlib
import shlex

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from kubeferry.errors import OperationError
from kubeferry.installer import facts, operations
from kubeferry.installer.ssh import CommandResult, Connection

ADMIN_CONF = "/etc/kubernetes/admin.conf"
KUBELET_CONF = "/etc/kubernetes/kubelet.conf"
CA_CERT = "/etc/kubernetes/pki/ca.crt"
CONFIG_DIR = "/var/lib/kubeferry/kubeadm"  # kubeadm config files kubeferry wrote (0600)
KUBECTL = f"kubectl --kubeconfig {ADMIN_CONF}"
def kubectl(conn: Connection, args: str, *, stdin: bytes | None = None,
            timeout: float = 120) -> CommandResult:
    """kubectl with the cluster's admin kubeconfig (on a control plane)."""
    return operations.run(conn, f"{KUBECTL} {args}", stdin=stdin, timeout=timeout)


def exists(conn: Connection, path: str) -> bool:
    return conn.run(f"test -e {shlex.quote(path)}", check=False).ok


def write_secret_file(conn: Connection, path: str, content: str) -> None:
    """``path`` (mode 0600, in a 0700 directory) holds ``content``, sent through stdin."""
    directory = path.rsplit("/", 1)[0]
    conn.run(f"mkdir -p {shlex.quote(directory)} && chmod 0700 {shlex.quote(directory)}")
    operations.apply(conn, operations.file(conn, path, content, mode="0600"))


def remove(conn: Connection, path: str) -> None:
    conn.run(f"rm -f {shlex.quote(path)}", check=False)


def ca_cert_hash(pem: bytes) -> str:
    """``sha256:<hex>`` of the CA's DER SubjectPublicKeyInfo: what kubeadm's caCertHashes pin."""
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError as error:
        raise OperationError(f"{CA_CERT} is not a PEM certificate ({error})") from None
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def read_ca_cert_hash(conn: Connection) -> str:
    """The CA hash of the cluster, from the control plane's ca.crt (hashed on the admin host)."""
    pem = facts.file_content(CA_CERT).read(conn)
    if pem is None:
        raise OperationError(f"{conn.host.name}: {CA_CERT} is missing: the cluster is not initialised"
                             " (run the init phase)")
    return ca_cert_hash(pem.encode())


def cluster_answers(conn: Connection) -> tuple[bool, str]:
    """(True, "") when the API server answers with the admin kubeconfig, else (False, why)."""
    result = conn.run(f"{KUBECTL} get nodes -o name", timeout=60, check=False)
    if result.ok:
        return True, ""
    lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
    return False, lines[-1] if lines else f"kubectl exited {result.rc}"
