"""The kubeadm double's PKI: every certificate and kubeconfig kubeadm 1.25 writes, at its
paths, with kubeadm's subjects, usages and SANs, checked with `cryptography`."""

from __future__ import annotations

import base64
import ipaddress
import json
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from doubles_configs import dump, init_docs, join_docs, with_change
from doubles_harness import Lab

PKI = "etc/kubernetes/pki"
SHARED = ("ca.crt", "ca.key", "sa.key", "sa.pub", "front-proxy-ca.crt", "front-proxy-ca.key", "etcd/ca.crt", "etcd/ca.key")
CA_SIGNED = {
    "ca": ("apiserver", "apiserver-kubelet-client"),
    "front-proxy-ca": ("front-proxy-client",),
    "etcd/ca": ("etcd/server", "etcd/peer", "etcd/healthcheck-client", "apiserver-etcd-client"),
}


def cert(root: Path, stem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((root / PKI / f"{stem}.crt").read_bytes())


def sans(certificate: x509.Certificate) -> list[str]:
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [f"DNS:{n}" for n in names.get_values_for_type(x509.DNSName)] + [
        f"IP:{a}" for a in names.get_values_for_type(x509.IPAddress)
    ]


def usages(certificate: x509.Certificate) -> set:
    return set(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def kubeconfig_subject(root: Path, name: str, ca: x509.Certificate) -> str:
    config = yaml.safe_load((root / "etc/kubernetes" / name).read_text())
    user = config["users"][0]["user"]
    client = x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))
    client.verify_directly_issued_by(ca)
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usages(client)
    return client.subject.rfc4514_string()


def test_init_and_control_plane_join_write_kubeadm_s_pki(lab: Lab) -> None:
    docs = with_change(init_docs(), "ClusterConfiguration", "apiServer.certSANs", ["api.example.test", "192.0.2.7"])
    cp1 = lab.node("cp1")
    cp1.start_kubelet()
    init = cp1.run("kubeadm", "init", "--config", cp1.config("init.yaml", dump(docs)), "--upload-certs")
    assert init.returncode == 0, init.stderr

    for ca_stem, leaves in CA_SIGNED.items():
        ca = cert(cp1.root, ca_stem)
        assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        for leaf in leaves:
            cert(cp1.root, leaf).verify_directly_issued_by(ca)
            assert (cp1.root / PKI / f"{leaf}.key").stat().st_mode & 0o777 == 0o600
    assert (cp1.root / PKI / "sa.key").exists() and (cp1.root / PKI / "sa.pub").exists()
    apiserver = cert(cp1.root, "apiserver")
    assert apiserver.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "kube-apiserver"
    assert usages(apiserver) == {ExtendedKeyUsageOID.SERVER_AUTH}
    assert sans(apiserver) == [
        "DNS:cp1", "DNS:kubernetes", "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local", "DNS:cp.lab.test", "DNS:api.example.test",
        "IP:10.96.0.1", "IP:127.0.0.11", "IP:192.0.2.7",
    ]
    assert sans(cert(cp1.root, "etcd/server")) == [
        "DNS:cp1", "DNS:localhost", "IP:127.0.0.11", "IP:127.0.0.1", f"IP:{ipaddress.ip_address('::1')}"
    ]
    assert usages(cert(cp1.root, "etcd/peer")) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert cert(cp1.root, "apiserver-kubelet-client").subject.rfc4514_string() == (
        "CN=kube-apiserver-kubelet-client,O=system:masters"
    )
    ca = cert(cp1.root, "ca")
    assert kubeconfig_subject(cp1.root, "admin.conf", ca) == "CN=kubernetes-admin,O=system:masters"
    assert kubeconfig_subject(cp1.root, "kubelet.conf", ca) == "CN=system:node:cp1,O=system:nodes"
    assert kubeconfig_subject(cp1.root, "controller-manager.conf", ca) == "CN=system:kube-controller-manager"
    assert kubeconfig_subject(cp1.root, "scheduler.conf", ca) == "CN=system:kube-scheduler"

    # the kubeadm-certs Secret: AES-GCM under the certificate key, as kubeadm seals it
    secret = json.loads((lab.state / "kubeadm-certs.json").read_text())
    assert sorted(secret["data"]) == sorted(n.replace("/", "-") for n in SHARED)
    sealed = base64.b64decode(secret["data"]["etcd-ca.key"])
    key = bytes.fromhex(lab.record.certificate_key()["key"])
    assert AESGCM(key).decrypt(sealed[:12], sealed[12:], None) == (cp1.root / PKI / "etcd/ca.key").read_bytes()

    init_record = lab.record.init_config()
    token = lab.record.tokens()[0]["token"]
    cp2 = lab.node("cp2")
    cp2.start_kubelet()
    join = dump(join_docs("cp2", token, init_record["ca_hash"], control_plane="127.0.0.12"))
    joined = cp2.run("kubeadm", "join", "--config", cp2.config("join.yaml", join))
    assert joined.returncode == 0, joined.stderr
    for shared in ("ca", "front-proxy-ca", "etcd/ca"):
        assert (cp2.root / PKI / f"{shared}.key").read_bytes() == (cp1.root / PKI / f"{shared}.key").read_bytes()
    assert (cp2.root / PKI / "sa.key").read_bytes() == (cp1.root / PKI / "sa.key").read_bytes()
    own = cert(cp2.root, "apiserver")
    own.verify_directly_issued_by(ca)
    assert "DNS:cp2" in sans(own) and "IP:127.0.0.12" in sans(own) and "DNS:api.example.test" in sans(own)
    assert "DNS:cp1" not in sans(own)
    assert sans(cert(cp2.root, "etcd/peer"))[:3] == ["DNS:cp2", "DNS:localhost", "IP:127.0.0.12"]


def check_expiration_rows(output: str) -> dict[str, list[str]]:
    """CERTIFICATE -> the other columns, split on kubeadm's tabwriter gaps."""
    import re

    rows = {}
    for line in output.splitlines():
        cells = re.split(r"\s{3,}", line.strip())
        if len(cells) >= 4 and cells[0] not in ("CERTIFICATE", "CERTIFICATE AUTHORITY"):
            rows[cells[0]] = cells[1:]
    return rows


def test_certs_check_expiration_renew_and_the_apiserver_certificate_re_issued(lab: Lab) -> None:
    cp1 = lab.node("cp1")
    cp1.start_kubelet()
    config = cp1.config("init.yaml", dump(init_docs()))
    assert cp1.run("kubeadm", "init", "--config", config).returncode == 0

    report = cp1.run("kubeadm", "certs", "check-expiration")
    assert report.returncode == 0, report.stderr
    lines = report.stdout.splitlines()
    assert lines[0] == "[check-expiration] Reading configuration from the cluster..."
    header = "CERTIFICATE                EXPIRES                  RESIDUAL TIME   CERTIFICATE AUTHORITY   EXTERNALLY MANAGED"
    assert header in lines
    assert "CERTIFICATE AUTHORITY   EXPIRES                  RESIDUAL TIME   EXTERNALLY MANAGED" in lines
    rows = check_expiration_rows(report.stdout)
    assert list(rows)[:10] == ["admin.conf", "apiserver", "apiserver-etcd-client", "apiserver-kubelet-client",
                               "controller-manager.conf", "etcd-healthcheck-client", "etcd-peer", "etcd-server",
                               "front-proxy-client", "scheduler.conf"]
    assert rows["apiserver"][1:] == ["364d", "ca", "no"] and rows["etcd-peer"][2] == "etcd-ca"
    assert rows["ca"][1:] == ["9y", "no"] and rows["front-proxy-ca"][1:] == ["9y", "no"]
    before = cert(cp1.root, "apiserver")
    expected = before.not_valid_after_utc.strftime("%b %d, %Y %H:%M UTC")
    assert rows["apiserver"][0] == expected

    renewed = cp1.run("kubeadm", "certs", "renew", "all")
    assert renewed.returncode == 0, renewed.stderr
    assert "certificate for serving the Kubernetes API renewed" in renewed.stdout
    assert renewed.stdout.rstrip().endswith("so that they can use the new certificates.")
    after = cert(cp1.root, "apiserver")
    assert after.serial_number != before.serial_number and sans(after) == sans(before)
    assert after.subject == before.subject
    after.verify_directly_issued_by(cert(cp1.root, "ca"))
    assert cert(cp1.root, "etcd/peer").subject.rfc4514_string() == "CN=cp1"

    # a control plane added at 127.0.0.12: the existing certificate lacks it and is refused,
    # moved aside it is issued again with the new certSANs
    wider = dump(with_change(init_docs(), "ClusterConfiguration", "apiServer.certSANs", ["cp2", "127.0.0.12"]))
    path = cp1.config("sans.yaml", wider)
    refused = cp1.run("kubeadm", "init", "phase", "certs", "apiserver", "--config", path)
    assert refused.returncode == 1
    assert "certificate apiserver is invalid: x509: certificate is valid for" in refused.stderr
    assert "not cp2" in refused.stderr
    uploaded = cp1.run("kubeadm", "init", "phase", "upload-config", "kubeadm", "--config", path)
    assert uploaded.returncode == 0, uploaded.stderr
    assert lab.record.init_config()["config"]["cluster"]["apiServer"]["certSANs"] == ["cp2", "127.0.0.12"]
    for suffix in ("crt", "key"):
        (cp1.root / PKI / f"apiserver.{suffix}").rename(cp1.root / PKI / f"apiserver.{suffix}.old")
    issued = cp1.run("kubeadm", "init", "phase", "certs", "apiserver", "--config", path)
    assert issued.returncode == 0, issued.stderr
    assert '[certs] Generating "apiserver" certificate and key' in issued.stdout
    assert {"DNS:cp2", "IP:127.0.0.12", "DNS:cp1"} <= set(sans(cert(cp1.root, "apiserver")))
    again = cp1.run("kubeadm", "init", "phase", "certs", "apiserver", "--config", path)
    assert again.returncode == 0 and '[certs] Using the existing "apiserver" certificate and key' in again.stdout
