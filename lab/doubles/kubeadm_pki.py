"""kubeadm's certificates, made with openssl as kubeadm 1.25's certs phase makes them.

Subjects, usages and SANs follow cmd/kubeadm/app/phases/certs/certlist.go and
cmd/kubeadm/app/util/pkiutil/pki_helpers.go (GetAPIServerAltNames, GetEtcdAltNames,
appendSANsToAltNames): the apiserver serving certificate names the node, the ``kubernetes``
service names under dnsDomain, the service IP (first address of serviceSubnet), the
advertise address, controlPlaneEndpoint's host and every apiServer.certSANs entry; etcd's
server and peer certificates name the node, localhost, the advertise address, 127.0.0.1
and ::1 plus etcd.local.serverCertSANs / peerCertSANs. EC P-256 keys (kubeadm makes RSA
2048; the same files, ten times faster to make).
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from doublelib import write_atomic

OpenSSL = Callable[..., bytes]
CA_DAYS = 3650
LEAF_DAYS = 365
NEW_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


@dataclass(frozen=True)
class Leaf:
    """One certificate kubeadm signs: ``name`` and ``ca`` are stems under the pki directory."""

    name: str
    ca: str
    subject: str
    usage: str
    sans: str = ""


CAS = {"ca": "kubernetes", "front-proxy-ca": "front-proxy-ca", "etcd/ca": "etcd-ca"}
LEAVES = (
    Leaf("apiserver", "ca", "/CN=kube-apiserver", "serverAuth", "apiserver"),
    Leaf("apiserver-kubelet-client", "ca", "/O=system:masters/CN=kube-apiserver-kubelet-client", "clientAuth"),
    Leaf("front-proxy-client", "front-proxy-ca", "/CN=front-proxy-client", "clientAuth"),
    Leaf("etcd/server", "etcd/ca", "/CN={node}", "serverAuth,clientAuth", "etcd-server"),
    Leaf("etcd/peer", "etcd/ca", "/CN={node}", "serverAuth,clientAuth", "etcd-peer"),
    Leaf("etcd/healthcheck-client", "etcd/ca", "/O=system:masters/CN=kube-etcd-healthcheck-client", "clientAuth"),
    Leaf("apiserver-etcd-client", "etcd/ca", "/O=system:masters/CN=kube-apiserver-etcd-client", "clientAuth"),
)


def san(value: str) -> str:
    """``IP:x`` for an address, ``DNS:x`` for a name (kubeadm's appendSANsToAltNames)."""
    try:
        return f"IP:{ipaddress.ip_address(value)}"
    except ValueError:
        return f"DNS:{value}"


def endpoint_host(endpoint: str) -> str:
    """The host of ``host``, ``host:port`` or ``[v6]:port``."""
    if endpoint.startswith("["):
        return endpoint[1:].split("]", 1)[0]
    if endpoint.count(":") == 1:
        return endpoint.split(":", 1)[0]
    return endpoint


def apiserver_sans(cluster: dict[str, Any], node: str, advertise: str) -> list[str]:
    net = cluster.get("networking") or {}
    subnet = ipaddress.ip_network(str(net.get("serviceSubnet") or "10.96.0.0/12").split(",")[0], strict=False)
    domain = net.get("dnsDomain") or "cluster.local"
    names = [node, "kubernetes", "kubernetes.default", "kubernetes.default.svc", f"kubernetes.default.svc.{domain}"]
    entries = [f"DNS:{n}" for n in names] + [f"IP:{subnet.network_address + 1}", f"IP:{advertise}"]
    if cluster.get("controlPlaneEndpoint"):
        entries.append(san(endpoint_host(str(cluster["controlPlaneEndpoint"]))))
    entries += [san(str(extra)) for extra in (cluster.get("apiServer") or {}).get("certSANs") or []]
    return unique(entries)


def etcd_sans(cluster: dict[str, Any], node: str, advertise: str, field: str) -> list[str]:
    local = (cluster.get("etcd") or {}).get("local") or {}
    entries = [f"DNS:{node}", "DNS:localhost", f"IP:{advertise}", "IP:127.0.0.1", "IP:::1"]
    return unique(entries + [san(str(extra)) for extra in local.get(field) or []])


def unique(entries: list[str]) -> list[str]:
    return list(dict.fromkeys(entries))


def make_ca(openssl: OpenSSL, pki: Path, stem: str) -> None:
    crt, key = pki / f"{stem}.crt", pki / f"{stem}.key"
    crt.parent.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", *NEW_KEY, "-keyout", str(key), "-out", str(crt), "-days", str(CA_DAYS),
            "-subj", f"/CN={CAS[stem]}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign",
            "-addext", "subjectKeyIdentifier=hash")
    os.chmod(key, 0o600)


def sign(openssl: OpenSSL, ca_crt: Path, ca_key: Path, subject: str, usage: str,
         sans: list[str] | None = None) -> tuple[bytes, bytes]:
    """A new EC key and its certificate from the CA: (certificate PEM, key PEM)."""
    extensions = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={usage}",
        "authorityKeyIdentifier=keyid",
    ]
    if sans:
        extensions.append("subjectAltName=" + ",".join(sans))
    with tempfile.TemporaryDirectory() as tmp:
        key, csr, crt, ext = (Path(tmp, n) for n in ("k", "csr", "crt", "ext"))
        ext.write_text("\n".join(extensions) + "\n")
        openssl("req", *NEW_KEY, "-keyout", str(key), "-out", str(csr), "-subj", subject)
        openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
                "-CAcreateserial", "-CAserial", str(Path(tmp, "srl")), "-out", str(crt),
                "-days", str(LEAF_DAYS), "-extfile", str(ext))
        return crt.read_bytes(), key.read_bytes()


def make_shared(openssl: OpenSSL, pki: Path) -> None:
    """What every control plane shares: the three CAs and the service-account key pair."""
    for stem in CAS:
        make_ca(openssl, pki, stem)
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-out", str(pki / "sa.key"))
    openssl("pkey", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
    os.chmod(pki / "sa.key", 0o600)


def make_node_certs(openssl: OpenSSL, pki: Path, cluster: dict[str, Any], node: str, advertise: str) -> None:
    """Each control plane's own certificates (kubeadm makes them on init and control-plane join)."""
    sans = {
        "apiserver": apiserver_sans(cluster, node, advertise),
        "etcd-server": etcd_sans(cluster, node, advertise, "serverCertSANs"),
        "etcd-peer": etcd_sans(cluster, node, advertise, "peerCertSANs"),
    }
    for leaf in LEAVES:
        cert, key = sign(openssl, pki / f"{leaf.ca}.crt", pki / f"{leaf.ca}.key",
                         leaf.subject.format(node=node), leaf.usage, sans.get(leaf.sans))
        write_atomic(pki / f"{leaf.name}.key", key, 0o600)
        write_atomic(pki / f"{leaf.name}.crt", cert)
