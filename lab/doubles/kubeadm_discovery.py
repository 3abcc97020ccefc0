"""kubeadm's bootstrap-token discovery over the network, and what init publishes for it.

Publishing (init, ``token create|delete``; through admin.conf, as kubeadm's bootstraptoken
phase does): the ``cluster-info`` ConfigMap in kube-public (a kubeconfig with the cluster CA
and the control-plane endpoint) and one ``bootstrap-token-<id>`` Secret per token in
kube-system. The JWS signatures (``jws-kubeconfig-<id>``) are added by the API server
stand-in when it serves cluster-info (apiserver_bootstrap.py), as kube-controller-manager's
bootstrapsigner keeps them, so an expired or deleted token has none.

Discovery (join), after kubeadm 1.25's ``pkg/discovery/token``: fetch cluster-info from the
endpoint without verifying TLS and without credentials; find ``jws-kubeconfig-<id>``;
check the detached JWS (HS256, key = the token's secret) over the kubeconfig; pin the CA
by ``caCertHashes`` (sha256 of its SubjectPublicKeyInfo); fetch again, TLS verified with
that CA against the endpoint's host (so a serving certificate without the endpoint's name
or address fails), and require the same kubeconfig. Every failure is retried until the
discovery timeout, as kubeadm retries; the last one is the error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import yaml
from apiclient import ApiClient, ApiUnavailable
from apiserver_bootstrap import detached_jws

CLUSTER_INFO = "/api/v1/namespaces/kube-public/configmaps/cluster-info"
RETRY = 1.0
TOKEN_GROUP = "system:bootstrappers:kubeadm:default-node-token"


class DiscoveryError(Exception):
    """One line: why the API server's identity could not be validated (kubeadm's wording).

    ``final``: kubeadm does not retry it (a bad signature, an unpinned CA); fetch errors and
    a missing signature are retried until the discovery timeout."""

    def __init__(self, message: str, final: bool = False) -> None:
        super().__init__(message)
        self.final = final


def cluster_info_kubeconfig(ca_pem: bytes, server: str) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "preferences": {}, "current-context": "", "contexts": None,
        "users": None,
        "clusters": [{"name": "", "cluster": {"certificate-authority-data": base64.b64encode(ca_pem).decode(),
                                              "server": server}}],
    }, sort_keys=True)


def rfc3339(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def publish(admin_conf: Path, credentials: Path, ca_pem: bytes, server: str, tokens: list[dict[str, Any]],
            cluster_info: bool = True) -> str:
    """The bootstrap-token Secrets in the API, and cluster-info with ``cluster_info`` (kubeadm's
    init writes it; ``token create/delete`` only the Secrets); "" or why it failed."""
    try:
        client = ApiClient(admin_conf, credentials)
        info = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cluster-info", "namespace": "kube-public"},
                "data": {"kubeconfig": cluster_info_kubeconfig(ca_pem, server)}}
        code = client.upsert("/api/v1/namespaces/kube-public/configmaps", info) if cluster_info else 200
        if code >= 300:
            return f"cluster-info: HTTP {code}"
        wanted = set()
        for token in tokens:
            token_id, token_secret = token["token"].split(".")
            wanted.add(f"bootstrap-token-{token_id}")
            data = {"token-id": token_id, "token-secret": token_secret, "description": token.get("description", ""),
                    "usage-bootstrap-authentication": "true", "usage-bootstrap-signing": "true",
                    "auth-extra-groups": TOKEN_GROUP}
            if token.get("expires"):
                data["expiration"] = rfc3339(float(token["expires"]))
            secret = {"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
                      "metadata": {"name": f"bootstrap-token-{token_id}", "namespace": "kube-system"},
                      "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}
            code = client.upsert("/api/v1/namespaces/kube-system/secrets", secret)
            if code >= 300:
                return f"bootstrap-token-{token_id}: HTTP {code}"
        code, listed = client.request("GET", "/api/v1/namespaces/kube-system/secrets")
        for item in listed.get("items") or []:
            name = item["metadata"]["name"]
            if item.get("type") == "bootstrap.kubernetes.io/token" and name not in wanted:
                client.request("DELETE", f"/api/v1/namespaces/kube-system/secrets/{name}")
    except (ApiUnavailable, OSError, KeyError, StopIteration, ValueError) as error:
        return str(error)
    return ""


def spki_hash(ca_pem: bytes, openssl: str) -> str:
    """``sha256:<hex>`` of the certificate's DER SubjectPublicKeyInfo (kubeadm's pubkeypin)."""
    result = subprocess.run([openssl, "x509", "-noout", "-pubkey"], input=ca_pem, capture_output=True,
                            timeout=30, check=False)
    if result.returncode != 0:
        raise DiscoveryError("cluster CA found in cluster-info ConfigMap is invalid: not a PEM certificate",
                             final=True)
    body = "".join(ln for ln in result.stdout.decode().splitlines() if ln and not ln.startswith("-----"))
    return "sha256:" + hashlib.sha256(base64.b64decode(body)).hexdigest()


def fetch(endpoint: str, context: ssl.SSLContext) -> dict[str, Any]:
    url = f"https://{endpoint}{CLUSTER_INFO}?timeout=10s"
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as error:
        raise DiscoveryError(f'configmaps "cluster-info" is forbidden or missing (HTTP {error.code})') from None
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, ConnectionRefusedError):
            raise DiscoveryError(f'Get "{url}": dial tcp {endpoint}: connect: connection refused') from None
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise DiscoveryError(f'Get "{url}": dial tcp {endpoint}: i/o timeout') from None
        raise DiscoveryError(f'Get "{url}": {reason}') from None
    except (OSError, ValueError) as error:
        raise DiscoveryError(f'Get "{url}": {error}') from None


def check_host(endpoint: str, ca_file: str) -> None:
    """Go's hostname check of the serving certificate (verified against the pinned CA)."""
    host, _, port = endpoint.rpartition(":")
    host = host.strip("[]")
    context = ssl.create_default_context(cafile=ca_file)
    context.check_hostname = False
    url = f"https://{endpoint}{CLUSTER_INFO}?timeout=10s"
    try:
        with socket.create_connection((host, int(port)), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            peer = tls.getpeercert() or {}
    except ssl.SSLCertVerificationError:
        raise DiscoveryError(f'Get "{url}": x509: certificate signed by unknown authority') from None
    except OSError as error:
        raise DiscoveryError(f'Get "{url}": {error}') from None
    names = [v for k, v in peer.get("subjectAltName", ()) if k == "DNS"]
    addresses = [v.strip() for k, v in peer.get("subjectAltName", ()) if k == "IP Address"]
    try:
        wanted = ipaddress.ip_address(host)
        valid = [a for a in addresses if ipaddress.ip_address(a) == wanted]
        listed = addresses
    except ValueError:
        valid = [n for n in names if n.lower() == host.lower()]
        listed = names
    if not valid:
        raise DiscoveryError(f'Get "{url}": x509: certificate is valid for {", ".join(listed)}, not {host}')


def validate_once(endpoint: str, token: str, hashes: list[str], openssl: str) -> None:
    token_id, token_secret = token.split(".")
    insecure = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    info = fetch(endpoint, insecure)
    data = info.get("data") or {}
    signature = data.get(f"jws-kubeconfig-{token_id}")
    if not signature:
        raise DiscoveryError(f'could not find a JWS signature in the cluster-info ConfigMap for token ID "{token_id}"')
    content = data.get("kubeconfig") or ""
    if not hmac.compare_digest(signature, detached_jws(content, token_id, token_secret)):
        raise DiscoveryError("failed to verify JWS signature of received cluster info object, can't trust this "
                             "API Server", final=True)
    try:
        config = yaml.safe_load(content) or {}
        ca_pem = base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"])
    except (yaml.YAMLError, KeyError, IndexError, TypeError, ValueError):
        raise DiscoveryError("couldn't parse the kubeconfig file in the cluster-info ConfigMap", final=True) from None
    pinned = spki_hash(ca_pem, openssl)
    if hashes and pinned not in hashes:
        raise DiscoveryError(f'cluster CA found in cluster-info ConfigMap is invalid: none of the public keys '
                             f'"{pinned}" are pinned', final=True)
    with tempfile.NamedTemporaryFile(suffix=".crt") as ca_file:
        ca_file.write(ca_pem)
        ca_file.flush()
        check_host(endpoint, ca_file.name)
        secure = ssl.create_default_context(cafile=ca_file.name)
        secure.check_hostname = False  # checked above, with Go's wording
        again = fetch(endpoint, secure)
    if (again.get("data") or {}).get("kubeconfig") != content:
        raise DiscoveryError("the second kubeconfig from the cluster-info ConfigMap didn't match the first")


def discover(endpoint: str, token: str, hashes: list[str], openssl: str, timeout: float,
             say: Callable[[str], None]) -> None:
    """Validate the API server's identity, retrying until ``timeout``; DiscoveryError with the last reason."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            validate_once(endpoint, token, hashes, openssl)
            return
        except DiscoveryError as error:
            if error.final or time.monotonic() + RETRY >= deadline:
                raise
            say(f"[discovery] Failed to request cluster-info, will try again: {error}")
        time.sleep(RETRY)
