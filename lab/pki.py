"""A throwaway certificate authority for the lab: HTTPS registries and token signing keys.

Keys are EC P-256 (fast to make, accepted by Go's TLS and by distribution's token
verifier). Private keys are written with mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class CertificateAuthority:
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class ServerCertificate:
    cert_file: Path
    key_file: Path
    ca_file: Path


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _load(ca: CertificateAuthority) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(ca.cert_file.read_bytes())
    key = serialization.load_pem_private_key(ca.key_file.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


def make_ca(directory: Path, name: str = "kubeferry lab CA") -> CertificateAuthority:
    """Create a self-signed CA in ``directory`` (ca.pem, ca-key.pem)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    ca = CertificateAuthority(directory / "ca.pem", directory / "ca-key.pem")
    ca.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, ca.key_file)
    return ca


def make_certificate(
    ca: CertificateAuthority,
    directory: Path,
    name: str,
    dns_names: list[str] | tuple[str, ...] = (),
    ip_addresses: list[str] | tuple[str, ...] = (),
    server: bool = True,
    key: ec.EllipticCurvePrivateKey | None = None,
) -> ServerCertificate:
    """Issue a certificate signed by ``ca`` (``<name>.pem`` and ``<name>-key.pem``).

    A server certificate carries the given DNS names and IPs as subjectAltNames; with
    ``server=False`` it is a plain signing certificate (the token service's). ``key``
    certifies an existing key instead of making a new one.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _load(ca)
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        alt_names: list[x509.GeneralName] = [x509.DNSName(dns) for dns in dns_names]
        alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        builder = builder.add_extension(
            x509.SubjectAlternativeName(alt_names), critical=False
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    issued = ServerCertificate(
        directory / f"{name}.pem", directory / f"{name}-key.pem", ca.cert_file
    )
    issued.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, issued.key_file)
    return issued


def make_server_pki(
    directory: Path,
    dns_names: list[str] | tuple[str, ...] = ("localhost",),
    ip_addresses: list[str] | tuple[str, ...] = ("127.0.0.1",),
    name: str = "server",
) -> ServerCertificate:
    """A fresh CA and one server certificate for the given names and IPs."""
    ca = make_ca(directory)
    return make_certificate(ca, directory, name, dns_names, ip_addresses)
