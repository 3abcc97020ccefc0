"""The API server stand-in, driven by the real kubectl of 1.25 and 1.26 over verified TLS.

In a network namespace of its own: the kubeadm double's PKI (made on the host with the same
module), a real etcd (Debian's etcd-server) with kubeadm's etcd certificates, and the stand-in
started with kube-apiserver's flags; every process stopped by pid at the end.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from doubles_configs import CALICO

from kubeferry.lab.daemon import Daemon
from kubeferry.lab.kubectl_release import kubectl_binary
from kubeferry.lab.standin_packages import DOUBLES

ADDRESS = "127.0.0.11"
MINORS = ("1.25", "1.26")
sys.path.insert(0, str(DOUBLES))
import kubeadm_pki  # noqa: E402


def openssl(*args: str) -> bytes:
    return subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60).stdout


def kubeconfig(path: Path, server: str, ca: bytes, user: dict[str, str]) -> Path:
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": server,
                                                "certificate-authority-data": base64.b64encode(ca).decode()}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
    }
    path.write_text(yaml.safe_dump(doc))
    return path


@dataclass
class Cluster:
    netns: str
    work: Path
    admin: Path

    def kubectl(self, minor: str, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
        command = ["ip", "netns", "exec", self.netns, str(kubectl_binary(minor)),
                   "--kubeconfig", str(config or self.admin), "--cache-dir", str(self.work / f"cache-{minor}"), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("apiserver")
    pki = work / "pki"
    kubeadm_pki.make_shared(openssl, pki)
    config = {"controlPlaneEndpoint": "cp.lab.test:6443", "networking": {"serviceSubnet": "10.96.0.0/12"}}
    kubeadm_pki.make_node_certs(openssl, pki, config, "cp1", ADDRESS)
    cert, key = kubeadm_pki.sign(openssl, pki / "ca.crt", pki / "ca.key", "/O=system:masters/CN=kubernetes-admin",
                                 "clientAuth")
    admin = kubeconfig(work / "admin.conf", f"https://{ADDRESS}:6443", (pki / "ca.crt").read_bytes(),
                       {"client-certificate-data": base64.b64encode(cert).decode(),
                        "client-key-data": base64.b64encode(key).decode()})
    netns = f"kfa{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", netns], check=True, timeout=30)
    daemons: list[Daemon] = []
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True, timeout=30)
        inside = ["ip", "netns", "exec", netns]
        etcd_log = work / "etcd.log"
        daemons.append(Daemon("etcd", [
            *inside, "etcd", "--name", "cp1", "--data-dir", str(work / "etcd"),
            f"--listen-client-urls=https://127.0.0.1:2379,https://{ADDRESS}:2379",
            f"--advertise-client-urls=https://{ADDRESS}:2379", f"--listen-peer-urls=https://{ADDRESS}:2380",
            f"--initial-advertise-peer-urls=https://{ADDRESS}:2380", f"--initial-cluster=cp1=https://{ADDRESS}:2380",
            f"--cert-file={pki}/etcd/server.crt", f"--key-file={pki}/etcd/server.key", "--client-cert-auth",
            f"--trusted-ca-file={pki}/etcd/ca.crt", f"--peer-cert-file={pki}/etcd/peer.crt",
            f"--peer-key-file={pki}/etcd/peer.key", "--peer-client-cert-auth",
            f"--peer-trusted-ca-file={pki}/etcd/ca.crt",
        ], etcd_log, lambda: "ready to serve client requests" in etcd_log.read_text(errors="replace")).start())
        api_log = work / "apiserver.log"
        daemons.append(Daemon("apiserver", [
            *inside, sys.executable, str(DOUBLES / "apiserver_double.py"), f"--advertise-address={ADDRESS}",
            "--secure-port=6443", f"--tls-cert-file={pki}/apiserver.crt", f"--tls-private-key-file={pki}/apiserver.key",
            f"--client-ca-file={pki}/ca.crt", "--etcd-servers=https://127.0.0.1:2379",
            f"--etcd-cafile={pki}/etcd/ca.crt", f"--etcd-certfile={pki}/apiserver-etcd-client.crt",
            f"--etcd-keyfile={pki}/apiserver-etcd-client.key", "--service-cluster-ip-range=10.96.0.0/12",
            "--enable-bootstrap-token-auth=true",
        ], api_log, lambda: "Serving securely on" in api_log.read_text(errors="replace"),
            env={**os.environ, "KUBEFERRY_APISERVER_VERSION": "v1.25.0"}).start())
        yield Cluster(netns, work, admin)
    finally:
        for daemon in reversed(daemons):
            daemon.stop()
        subprocess.run(["ip", "netns", "del", netns], check=False, timeout=30)


@pytest.mark.parametrize("minor", MINORS)
def test_real_kubectl_reads_discovery_and_the_bootstrap_objects(cluster: Cluster, minor: str) -> None:
    namespaces = cluster.kubectl(minor, "get", "namespaces")
    assert namespaces.returncode == 0, namespaces.stderr
    assert [line.split()[:2] for line in namespaces.stdout.splitlines()] == [
        ["NAME", "STATUS"], ["default", "Active"], ["kube-node-lease", "Active"], ["kube-public", "Active"],
        ["kube-system", "Active"]]
    service = cluster.kubectl(minor, "get", "service", "kubernetes", "-o", "jsonpath={.spec.clusterIP}")
    assert service.stdout == "10.96.0.1", service.stderr
    version = cluster.kubectl(minor, "version", "-o", "yaml")
    assert yaml.safe_load(version.stdout)["serverVersion"]["gitVersion"] == "v1.25.0"
    missing = cluster.kubectl(minor, "get", "storageclasses")
    assert missing.returncode == 1
    assert 'the server doesn\'t have a resource type "storageclasses"' in missing.stderr
    raw = cluster.kubectl(minor, "get", "--raw", "/apis/storage.k8s.io/v1/storageclasses")
    assert raw.returncode == 1 and "Error from server (NotFound)" in raw.stderr
    absent = cluster.kubectl(minor, "get", "configmap", "nothing-here", "-n", "kube-system")
    assert 'Error from server (NotFound): configmaps "nothing-here" not found' in absent.stderr


def test_calico_applies_with_server_dry_run_then_for_real(cluster: Cluster) -> None:
    for minor in MINORS:
        dry = cluster.kubectl(minor, "apply", "--dry-run=server", "-f", str(CALICO))
        assert dry.returncode == 0, dry.stderr
        assert "daemonset.apps/calico-node created (server dry run)" in dry.stdout
        assert "customresourcedefinition.apiextensions.k8s.io/ippools.crd.projectcalico.org created (server dry run)" \
            in dry.stdout
    assert "No resources found" in cluster.kubectl("1.25", "get", "crd").stderr
    applied = cluster.kubectl("1.25", "apply", "-f", str(CALICO))
    assert applied.returncode == 0, applied.stderr
    assert len([line for line in applied.stdout.splitlines() if line.endswith(" created")]) == 27
    crds = cluster.kubectl("1.26", "get", "crd", "-o", "name").stdout.split()
    assert len(crds) == 17 and "customresourcedefinition.apiextensions.k8s.io/ippools.crd.projectcalico.org" in crds
    again = cluster.kubectl("1.26", "apply", "--dry-run=server", "-f", str(CALICO))
    assert again.returncode == 0, again.stderr
    assert "daemonset.apps/calico-node unchanged (server dry run)" in again.stdout
    pools = cluster.kubectl("1.26", "get", "ippools")
    assert pools.returncode == 0 and "No resources found" in pools.stderr, pools.stderr
    daemonset = cluster.kubectl("1.25", "get", "ds", "-n", "kube-system", "calico-node", "-o",
                                "jsonpath={.spec.template.spec.containers[0].image}")
    assert daemonset.stdout == "docker.io/calico/node:v3.24.5"
    pods = cluster.kubectl("1.25", "get", "pods", "-A")
    assert pods.returncode == 0 and "No resources found" in pods.stderr


def test_tls_is_verified_by_the_serving_certificate_s_names(cluster: Cluster) -> None:
    config = yaml.safe_load(cluster.admin.read_text())
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:6443"  # not a SAN kubeadm adds
    wrong_name = cluster.work / "wrong-name.conf"
    wrong_name.write_text(yaml.safe_dump(config))
    refused = cluster.kubectl("1.25", "get", "nodes", config=wrong_name)
    assert refused.returncode == 1
    assert "x509: certificate is valid for 10.96.0.1, 127.0.0.11, not 127.0.0.1" in refused.stderr
    other = cluster.work / "other"
    kubeadm_pki.make_ca(openssl, other, "ca")
    config["clusters"][0]["cluster"]["server"] = f"https://{ADDRESS}:6443"
    config["clusters"][0]["cluster"]["certificate-authority-data"] = base64.b64encode(
        (other / "ca.crt").read_bytes()).decode()
    stale = cluster.work / "stale-ca.conf"
    stale.write_text(yaml.safe_dump(config))
    unknown = cluster.kubectl("1.25", "get", "nodes", config=stale)
    assert unknown.returncode == 1 and "x509: certificate signed by unknown authority" in unknown.stderr


def test_bootstrap_tokens_and_anonymous_requests(cluster: Cluster) -> None:
    def secret(token_id: str, expiration: str) -> str:
        return yaml.safe_dump({
            "apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
            "metadata": {"name": f"bootstrap-token-{token_id}", "namespace": "kube-system"},
            "stringData": {"token-id": token_id, "token-secret": "0123456789abcdef", "expiration": expiration,
                           "usage-bootstrap-authentication": "true", "usage-bootstrap-signing": "true",
                           "auth-extra-groups": "system:bootstrappers:kubeadm:default-node-token"}})

    future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    past = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    for token_id, expiration in (("abcdef", future), ("expird", past)):
        path = cluster.work / f"{token_id}.yaml"
        path.write_text(secret(token_id, expiration))
        created = cluster.kubectl("1.25", "create", "-f", str(path))
        assert created.returncode == 0, created.stderr
    ca = (cluster.work / "pki/ca.crt").read_bytes()
    server = f"https://{ADDRESS}:6443"
    valid = kubeconfig(cluster.work / "token.conf", server, ca, {"token": "abcdef.0123456789abcdef"})
    read = cluster.kubectl("1.25", "get", "configmap", "cluster-info", "-n", "kube-public", config=valid)
    assert 'configmaps "cluster-info" not found' in read.stderr, read.stderr
    listing = cluster.kubectl("1.25", "get", "secrets", "-n", "kube-system", config=valid)
    assert listing.returncode == 1
    assert ('User "system:bootstrap:abcdef" cannot list resource "secrets" in API group "" in the namespace '
            '"kube-system"') in listing.stderr
    for token in ("expird.0123456789abcdef", "abcdef.ffffffffffffffff", "not-a-token"):
        config = kubeconfig(cluster.work / "bad-token.conf", server, ca, {"token": token})
        refused = cluster.kubectl("1.25", "get", "configmap", "cluster-info", "-n", "kube-public", config=config)
        assert "error: You must be logged in to the server (Unauthorized)" in refused.stderr, refused.stderr
    # anonymous (kubectl prompts for credentials without any, so curl asks): kubeadm's RBAC
    # lets system:unauthenticated read only kube-public's cluster-info
    def anonymous(path: str) -> dict:
        answer = subprocess.run(["ip", "netns", "exec", cluster.netns, "curl", "-sS", "--cacert",
                                 str(cluster.work / "pki/ca.crt"), f"{server}{path}"],
                                capture_output=True, text=True, timeout=60)
        return json.loads(answer.stdout)

    nodes = anonymous("/api/v1/nodes")
    assert nodes["code"] == 403 and nodes["message"].endswith('User "system:anonymous" cannot get path "/api/v1/nodes"')
    info = anonymous("/api/v1/namespaces/kube-public/configmaps/cluster-info")
    assert info["code"] == 404 and info["message"] == 'configmaps "cluster-info" not found'
    assert anonymous("/version")["gitVersion"] == "v1.25.0"
