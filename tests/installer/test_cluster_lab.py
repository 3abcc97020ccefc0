"""The cluster phases (loadbalancer, init, join, cni, verify) on the air-gap lab's real nodes,
against the lab's kubeadm/kubelet doubles and real kubectl, through the CLI as an operator runs it."""

from __future__ import annotations

import base64
import datetime
import json
import re
import socket
import ssl
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
import yaml
from cluster_lab import ClusterLab, install, write_test_bundle
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from kubeferry.lab.node import Node
from kubeferry.lab.site import Site

pytestmark = [pytest.mark.real, pytest.mark.lab]

ALL = "loadbalancer,init,join,cni,verify"


@pytest.fixture
def cluster_lab(lab_site_factory, tmp_path: Path) -> Iterator[Callable[[int], ClusterLab]]:
    made: list[ClusterLab] = []

    def make(nodes: int) -> ClusterLab:
        lab = ClusterLab(lab_site_factory(nodes), tmp_path)
        made.append(lab)
        return lab.start()

    yield make
    for lab in made:
        lab.stop()


def ok(result) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stdout


def statuses(stdout: str) -> dict[tuple[str, str], str]:
    """(phase, host) -> status word, from the one line per host and phase."""
    found = {}
    for line in stdout.splitlines():
        if line.startswith("[") and "]" in line and ": " in line:
            phase, rest = line[1:].split("] ", 1)
            host, status = rest.split(": ", 1)
            found[(phase, host)] = status.split()[0]
    return found


def secrets_of(lab: ClusterLab) -> list[str]:
    """Every bootstrap token (and its secret half) and certificate key the cluster saw."""
    values = []
    for token in lab.record.tokens():
        values += [token["token"], token["token"].split(".")[1]]
    key = lab.record.certificate_key()
    if key:
        values.append(key["key"])
    return values


def assert_no_secret_in(paths: list[Path], texts: list[str], secrets: list[str]) -> None:
    assert secrets
    everything = "".join(texts) + "".join(p.read_text(errors="replace") for p in paths)
    leaked = [secret[:6] + "..." for secret in secrets if secret in everything]
    assert not leaked, f"secrets in logs or output: {leaked}"


def kubeadm_calls(lab: ClusterLab) -> list[tuple[str, str, dict]]:
    calls = []
    for call in lab.record.invocations(program="kubeadm"):
        calls.append((call["node"], " ".join(call["argv"][1:3]), call))
    return calls


def assert_secrets_never_on_a_command_line(lab: ClusterLab) -> None:
    for call in lab.record.invocations():
        assert not call.get("secret_flags"), call["argv"]
        joined = " ".join(call["argv"])
        assert all(secret not in joined for secret in secrets_of(lab)), call["argv"]


def vip_holders(site: Site) -> list[str]:
    return [node.name for node in site.nodes
            if f" {site.vip}/" in node.ssh("ip -o -4 addr show", check=False).stdout]


def wait_for(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return check()


def mode(node: Node, path: str) -> str:
    return node.ssh(f"stat -c %a {path}").stdout.strip()


def calico_daemonset(node: Node) -> dict:
    command = ("kubectl --kubeconfig /etc/kubernetes/admin.conf -n kube-system"
               " get daemonset calico-node -o json")
    return json.loads(node.ssh(command).stdout)


def test_one_control_plane_two_workers(cluster_lab, tmp_path: Path) -> None:
    lab = cluster_lab(3)
    site = lab.site
    inventory = lab.inventory(1, 2)
    first = ok(lab.install(inventory, "init,join,cni,verify", tmp_path / "run1"))
    assert statuses(first) == {
        ("init", "node1"): "changed", ("init", "admin-host"): "changed",
        ("join", "node2"): "changed", ("join", "node3"): "changed", ("join", "admin-host"): "ok",
        ("cni", "node1"): "changed", ("verify", "node1"): "ok",
    }
    assert ("3 nodes Ready; 13 kube-system pods Running; DNS resolves kubernetes.default;"
            f" all 9 images from {lab.settings.repository}") in first

    # the double accepted init, then every join, in that order, all on their first try
    calls = kubeadm_calls(lab)
    assert [(node, command) for node, command, _ in calls[:2]] == [("node1", "init --config"),
                                                                   ("node1", "token create")]
    assert sorted((node, command) for node, command, _ in calls[2:]) == [("node2", "join --config"),
                                                                         ("node3", "join --config")]
    assert all(call["exit_code"] == 0 for _, _, call in calls)
    order = lab.record.join_order()
    assert order[0] == ("node1", "control-plane") and sorted(order[1:]) == [("node2", "worker"),
                                                                          ("node3", "worker")]
    init = lab.record.init_config()
    assert init["imageRepository"] == lab.settings.repository
    assert init["controlPlaneEndpoint"] == f"{site.nodes[0].address}:6443"
    assert (init["podSubnet"], init["proxyMode"], init["cgroupDriver"]) == \
        ("10.244.0.0/16", "ipvs", "systemd")
    calico = calico_daemonset(site.nodes[0])  # real kubectl on the node, from the API server's etcd
    template = calico["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in template["containers"][0]["env"]}
    assert env["CALICO_IPV4POOL_CIDR"] == "10.244.0.0/16"
    images = [c["image"] for c in template["containers"] + template["initContainers"]]
    assert all(image.startswith(lab.settings.repository + "/calico/") for image in images)

    # secrets: only in 0600 files, never on a command line, in a log or in the output
    assert_secrets_never_on_a_command_line(lab)
    assert_no_secret_in(list((tmp_path / "run1").iterdir()), [first], secrets_of(lab))
    node1, node2 = site.nodes[0], site.nodes[1]
    assert mode(node1, "/var/lib/kubeferry/kubeadm") == "700"
    assert mode(node1, "/var/lib/kubeferry/kubeadm/init.yaml") == "600"
    kept = node1.ssh("cat /var/lib/kubeferry/kubeadm/init.yaml").stdout  # a record, no secret
    assert "certificateKey" not in kept and "bootstrapTokens" not in kept and "ClusterConfiguration" in kept
    assert node2.ssh("test -e /var/lib/kubeferry/kubeadm/join.yaml", check=False).exit_status == 1
    admin_conf = tmp_path / "cluster-admin.conf"
    assert oct(admin_conf.stat().st_mode & 0o777) == "0o600"
    assert admin_conf.read_text() == node1.ssh("cat /etc/kubernetes/admin.conf").stdout
    assert yaml.safe_load(admin_conf.read_text())["clusters"][0]["cluster"]["server"] == \
        f"https://{site.nodes[0].address}:6443"

    # the same install again changes nothing and calls kubeadm no more
    applied = calico["metadata"]["resourceVersion"]
    again = ok(lab.install(inventory, "init,join,cni,verify", tmp_path / "run2"))
    assert statuses(again) == {
        ("init", "node1"): "done", ("init", "admin-host"): "ok",
        ("join", "node2"): "done", ("join", "node3"): "done", ("join", "admin-host"): "ok",
        ("cni", "node1"): "done", ("verify", "node1"): "ok",
    }
    assert len(kubeadm_calls(lab)) == len(calls)
    assert calico_daemonset(site.nodes[0])["metadata"]["resourceVersion"] == applied, "apply changed nothing"

    # with the markers gone, the phases still find nothing to do (init: the cluster
    # answers; join: kubelet.conf; cni: kubectl apply says unchanged)
    for node in site.nodes:
        node.ssh("rm -rf /var/lib/kubeferry/phases")
    plan = ok(lab.install(inventory, "init,join,cni,verify", tmp_path / "run3", "--plan"))
    assert "would kubeadm" not in plan
    third = ok(lab.install(inventory, "init,join,cni,verify", tmp_path / "run4"))
    assert {status for key, status in statuses(third).items()} == {"ok"}, third
    assert len(kubeadm_calls(lab)) == len(calls)


def test_ha_three_control_planes_a_vip_and_a_worker(cluster_lab, tmp_path: Path) -> None:
    lab = cluster_lab(4)
    site = lab.site
    inventory = lab.inventory(3, 1, endpoint=f"{site.vip}:8443", vip=True)
    first = ok(lab.install(inventory, "loadbalancer,init", tmp_path / "run1"))
    assert [statuses(first)[("loadbalancer", f"node{i}")] for i in (1, 2, 3)] == ["changed"] * 3
    assert len(vip_holders(site)) == 1
    for node in site.nodes[:3]:
        assert node.ssh("systemctl is-active haproxy keepalived").stdout.split() == ["active", "active"]
        assert node.ssh("haproxy -c -q -f /etc/haproxy/haproxy.cfg", check=False).exit_status == 0

    # a new process: the certificate key init uploaded is unknown to it, so join uploads
    # the certificates again under a new key before the control planes join
    second = ok(lab.install(inventory, "join,cni,verify", tmp_path / "run2"))
    assert "4 nodes Ready" in second and "DNS resolves kubernetes.default" in second
    calls = kubeadm_calls(lab)
    assert [(node, command) for node, command, _ in calls] == [
        ("node1", "init --config"), ("node1", "token create"), ("node1", "init phase"),
        ("node2", "join --config"), ("node3", "join --config"), ("node4", "join --config")]
    assert all(call["exit_code"] == 0 for _, _, call in calls)
    joins = {node: call for node, command, call in calls if command == "join --config"}
    assert (joins["node2"]["role"], joins["node3"]["role"], joins["node4"]["role"]) == \
        ("control-plane", "control-plane", "worker")
    # control planes one at a time (stacked etcd), the worker after them
    assert joins["node2"]["time"] + joins["node2"]["duration"] <= joins["node3"]["time"]
    assert joins["node3"]["time"] + joins["node3"]["duration"] <= joins["node4"]["time"]
    assert lab.record.join_order() == [("node1", "control-plane"), ("node2", "control-plane"),
                                       ("node3", "control-plane"), ("node4", "worker")]
    assert lab.record.init_config()["endpoint"] == f"{site.vip}:8443"
    assert_secrets_never_on_a_command_line(lab)
    logs = list((tmp_path / "run1").iterdir()) + list((tmp_path / "run2").iterdir())
    assert_no_secret_in(logs, [first, second], secrets_of(lab))

    # the whole install again: nothing changes, no service restarts
    def started() -> dict[str, str]:
        show = "systemctl show -p ActiveEnterTimestampMonotonic haproxy keepalived"
        return {node.name: node.ssh(show).stdout for node in site.nodes[:3]}

    before = started()
    again = ok(lab.install(inventory, ALL, tmp_path / "run3"))
    assert set(statuses(again).values()) <= {"done", "ok"}, again
    assert len(kubeadm_calls(lab)) == len(calls)
    assert started() == before

    # haproxy stops on the VIP's holder: keepalived's check moves the VIP to another node
    holder = site.node(vip_holders(site)[0])
    holder.ssh("systemctl stop haproxy")
    try:
        def moved() -> bool:  # one look at the nodes: the VIP may move between two
            holders = vip_holders(site)
            return len(holders) == 1 and holders[0] != holder.name

        assert wait_for(moved, 30)
    finally:
        holder.ssh("systemctl start haproxy")


def test_a_wrong_endpoint_in_the_inventory_fails_init_in_one_line(cluster_lab, tmp_path: Path) -> None:
    """kubeadm init waits for the API server through controlPlaneEndpoint: nothing answers there."""
    lab = cluster_lab(1)
    nowhere = f"{lab.site.subnet.network_address + 99}:6443"
    result = lab.install(lab.inventory(1, 0, endpoint=nowhere), "init", tmp_path / "run")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "node1 in phase init" in last and "error execution phase wait-control-plane" in last, last


KUBECTL = "kubectl --kubeconfig /etc/kubernetes/admin.conf"
LONG_AGO = base64.b64encode(b"2000-01-01T00:00:00Z").decode()


def expire_bootstrap_tokens(lab: ClusterLab) -> int:
    """Every bootstrap token expired (as days between init and join would): in kubeadm's record
    and its Secret in the API; how many."""
    lab.record.expire_tokens()
    node = lab.site.nodes[0]
    listed = json.loads(node.ssh(f"{KUBECTL} -n kube-system get secrets -o json").stdout)["items"]
    names = [s["metadata"]["name"] for s in listed if s.get("type") == "bootstrap.kubernetes.io/token"]
    patch = json.dumps({"data": {"expiration": LONG_AGO}})
    for name in names:
        node.ssh(f"{KUBECTL} -n kube-system patch secret {name} --type merge -p '{patch}'")
    return len(names)


def cluster_info_ca(node: Node, pem: str) -> str:
    """cluster-info's kubeconfig made to carry ``pem`` as its CA; the kubeconfig it had."""
    shown = json.loads(node.ssh(f"{KUBECTL} -n kube-public get configmap cluster-info -o json").stdout)
    kubeconfig = shown["data"]["kubeconfig"]
    config = yaml.safe_load(kubeconfig)
    config["clusters"][0]["cluster"]["certificate-authority-data"] = base64.b64encode(pem.encode()).decode()
    set_cluster_info(node, yaml.safe_dump(config))
    return kubeconfig


def set_cluster_info(node: Node, kubeconfig: str) -> None:
    patch = json.dumps({"data": {"kubeconfig": kubeconfig}}).encode()
    node.ssh("cat > /root/cluster-info-patch.json", stdin=patch)
    node.ssh(f"{KUBECTL} -n kube-public patch configmap cluster-info --type merge"
             " --patch-file /root/cluster-info-patch.json && rm /root/cluster-info-patch.json")


def test_join_expired_tokens_recover_an_unpinned_ca_fails_in_one_line(cluster_lab, tmp_path: Path) -> None:
    """Init, then the join in a later run: every bootstrap token has expired meanwhile
    (kubeferry makes a fresh one, so the join goes through), but first cluster-info carries
    another CA than the one kubeferry's --discovery-token-ca-cert-hash pins (what a join
    endpoint answered by another cluster looks like): kubeadm refuses it, and kubeferry says
    so in one line naming the node; the CA put back, a re-run joins."""
    lab = cluster_lab(2)
    node1 = lab.site.nodes[0]
    inventory = lab.inventory(1, 1)
    ok(lab.install(inventory, "init", tmp_path / "run1"))
    assert expire_bootstrap_tokens(lab) == 1  # the one init made

    other_ca = node1.ssh("cat /etc/kubernetes/pki/front-proxy-ca.crt").stdout  # a CA, not the cluster's
    kubeconfig = cluster_info_ca(node1, other_ca)
    refused = lab.install(inventory, "join", tmp_path / "run2")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stdout + refused.stderr
    errors = refused.stderr.strip().splitlines()
    assert len(errors) == 1, errors
    # past the JWS check (the fresh token signs), refused at the CA pin
    assert "node2 in phase join" in errors[0] and "none of the public keys" in errors[0] \
        and "are pinned" in errors[0], errors[0]
    assert not any(secret in refused.stdout + refused.stderr for secret in secrets_of(lab))

    set_cluster_info(node1, kubeconfig)
    assert expire_bootstrap_tokens(lab) == 2  # init's, and the one the refused run made
    joined = ok(lab.install(inventory, "join,cni,verify", tmp_path / "run3"))
    assert statuses(joined)[("join", "node2")] == "changed" and "2 nodes Ready" in joined
    calls = [(node, command) for node, command, _ in kubeadm_calls(lab)]
    assert calls == [("node1", "init --config"), ("node1", "token create"), ("node2", "join --config"),
                     ("node1", "token create"), ("node2", "join --config")]
    assert lab.record.join_order() == [("node1", "control-plane"), ("node2", "worker")]


PKI = "/etc/kubernetes/pki"
ENDPOINT_NAME = "k8s-api.site.lab"  # the site's name for its API endpoint


def served_certificate(node: Node) -> x509.Certificate | None:
    """The certificate node's API server presents on 6443 now; None when nothing answers."""
    try:
        pem = ssl.get_server_certificate((node.address, 6443), timeout=5)
    except OSError:
        return None
    return x509.load_pem_x509_certificate(pem.encode())


def dns_names(cert: x509.Certificate) -> list[str]:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)


def reissue_without(node: Node, name: str) -> None:
    """node's apiserver certificate signed again by the cluster CA without ``name`` (a site's
    hand re-issue that forgot it): same key, subject, usages and other SANs."""
    old = x509.load_pem_x509_certificate(node.ssh(f"cat {PKI}/apiserver.crt").stdout.encode())
    ca_cert = x509.load_pem_x509_certificate(node.ssh(f"cat {PKI}/ca.crt").stdout.encode())
    ca_key = serialization.load_pem_private_key(node.ssh(f"cat {PKI}/ca.key").stdout.encode(), None)
    sans = old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    kept = x509.SubjectAlternativeName([entry for entry in sans if entry != x509.DNSName(name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(old.subject).issuer_name(ca_cert.subject)
               .public_key(old.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1))
               .not_valid_after(now + datetime.timedelta(days=365)))
    for extension in old.extensions:
        value = kept if isinstance(extension.value, x509.SubjectAlternativeName) else extension.value
        builder = builder.add_extension(value, extension.critical)
    pem = builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    node.ssh(f"cat > {PKI}/apiserver.crt", stdin=pem)


def restart_apiserver(node: Node) -> None:
    """The kube-apiserver static pod stopped and started again by its kubelet, as kubeadm's
    documentation says (installer/controlplane.restart_static_pods does the same)."""
    manifest = "/etc/kubernetes/manifests/kube-apiserver.yaml"
    node.ssh(f"mv {manifest} /root/kube-apiserver.yaml")
    try:
        assert wait_for(lambda: served_certificate(node) is None, 60), "the API server did not stop"
    finally:
        node.ssh(f"mv /root/kube-apiserver.yaml {manifest}")
    assert wait_for(lambda: served_certificate(node) is not None, 120), "the API server did not start"


def join_by_hand(node: Node, lab: ClusterLab, endpoint: str) -> str:
    """``kubeadm join`` straight on ``node`` with init's token and the pinned CA (discovery
    timeout 3 s); its exit status and output."""
    document = {"apiVersion": "kubeadm.k8s.io/v1beta3", "kind": "JoinConfiguration",
                "discovery": {"bootstrapToken": {"apiServerEndpoint": endpoint,
                                                 "token": lab.record.tokens()[0]["token"],
                                                 "caCertHashes": [lab.record.init_config()["ca_hash"]]},
                              "timeout": "3s"},
                "nodeRegistration": {"name": node.name,
                                     "criSocket": "unix:///var/run/containerd/containerd.sock"}}
    node.ssh("(umask 077 && cat > /root/join.yaml)", stdin=yaml.safe_dump(document).encode())
    result = node.ssh("kubeadm join --config /root/join.yaml 2>&1; s=$?; rm -f /root/join.yaml; exit $s",
                      check=False, timeout=120)
    return f"exit {result.exit_status}: {result.stdout}"


def test_a_certificate_without_the_endpoints_name_is_reissued_before_the_joins(cluster_lab,
                                                                               tmp_path: Path) -> None:
    """controlPlaneEndpoint is a name (the site's DNS, here every node's /etc/hosts, leads it to
    node1). After init, the site re-issues node1's apiserver certificate and forgets that name:
    kubeadm join through it then fails discovery with x509 (and kubeadm token create through
    admin.conf would too). kubeferry's join phase re-issues the certificate before the joins
    (shown by --plan), the worker joins, a re-run changes nothing. Without the CA's key on node1
    (an external CA) it cannot: one line saying what the site's CA must issue, nothing joined."""
    lab = cluster_lab(2)
    node1, node2 = lab.site.nodes
    for node in (node1, node2):
        node.ssh(f"echo {node1.address} {ENDPOINT_NAME} >> /etc/hosts")
    endpoint = f"{ENDPOINT_NAME}:6443"
    inventory = lab.inventory(1, 1, endpoint=endpoint)
    ok(lab.install(inventory, "init", tmp_path / "run1"))
    assert ENDPOINT_NAME in dns_names(served_certificate(node1))

    reissue_without(node1, ENDPOINT_NAME)
    restart_apiserver(node1)
    assert ENDPOINT_NAME not in dns_names(served_certificate(node1))
    by_hand = join_by_hand(node2, lab, endpoint)  # kubeadm itself, as a runbook would
    assert by_hand.startswith("exit 1") and "couldn't validate the identity of the API Server" in by_hand \
        and "x509: certificate is valid for" in by_hand and f"not {ENDPOINT_NAME}" in by_hand, by_hand

    # an external CA: the key is not on the node, kubeferry cannot re-issue; one line, no join
    node1.ssh(f"mv {PKI}/ca.key /root/ca.key")
    try:
        refused = lab.install(inventory, "join", tmp_path / "run2")
    finally:
        node1.ssh(f"mv /root/ca.key {PKI}/ca.key")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stdout + refused.stderr
    errors = refused.stderr.strip().splitlines()
    assert len(errors) == 1, errors
    assert "admin-host in phase join: node1: its apiserver certificate lacks k8s-api.site.lab" in errors[0] \
        and "ca.key is not there (an external CA): have the site's CA issue" in errors[0], errors[0]
    assert lab.record.join_order() == [("node1", "control-plane")]

    plan = ok(lab.install(inventory, "join", tmp_path / "plan", "--plan"))
    assert plan.count("would re-issue") == 1, plan
    assert (f"[join] admin-host: would re-issue the apiserver certificate on node1 (it lacks {ENDPOINT_NAME})"
            " and restart its kube-apiserver") in plan, plan
    assert plan.index("would re-issue") < plan.index("[join] node2: would kubeadm join as a worker"), plan

    joined = ok(lab.install(inventory, "join", tmp_path / "run3"))
    lines = joined.splitlines()
    reissued = next(i for i, line in enumerate(lines) if line.startswith("[join] admin-host: changed (node1:"
                                                                         " apiserver certificate re-issued"))
    assert reissued < lines.index("[join] node2: changed (joined as a worker)"), joined
    assert re.search(r"^admin-host +changed", joined, re.M), joined  # the table: changed before, ok after
    assert lab.record.join_order() == [("node1", "control-plane"), ("node2", "worker")]
    ca = node1.ssh(f"cat {PKI}/ca.crt").stdout
    raw = socket.create_connection((node1.address, 6443), timeout=10)
    with ssl.create_default_context(cadata=ca).wrap_socket(raw, server_hostname=ENDPOINT_NAME) as verified:
        assert ENDPOINT_NAME in [v for k, v in verified.getpeercert()["subjectAltName"] if k == "DNS"]
    calls = [(node, command) for node, command, _ in kubeadm_calls(lab)]
    assert calls == [("node1", "init --config"), ("node2", "join --config"), ("node1", "init phase"),
                     ("node1", "init phase"), ("node1", "token create"), ("node2", "join --config")], calls
    assert not any(secret in joined for secret in secrets_of(lab))

    again = ok(lab.install(inventory, "join", tmp_path / "run4"))
    assert statuses(again) == {("join", "node2"): "done", ("join", "admin-host"): "ok"}, again
    assert len(kubeadm_calls(lab)) == len(calls)


def test_a_wrong_host_key_is_refused_before_anything_changes(lab_site: Site, tmp_path: Path) -> None:
    node1, node2 = lab_site.nodes[0], lab_site.nodes[1]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"{node1.address} {node2.host_key}\n")  # node2's key for node1
    inventory = tmp_path / "cluster.yaml"
    inventory.write_text(yaml.safe_dump({
        "cluster": {"controlPlaneEndpoint": f"{node1.address}:6443"},
        "registry": "none",
        "ssh": {"user": "root", "keyFile": str(lab_site.ssh_key), "knownHosts": str(known_hosts)},
        "hosts": [{"name": "node1", "address": node1.address, "roles": ["control-plane"]}],
    }))
    result = install(write_test_bundle(tmp_path), inventory, "init", tmp_path / "run")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "host key does not match" in last and "refusing to connect" in last
    assert node1.ssh("test -e /var/lib/kubeferry", check=False).exit_status == 1


def test_loadbalancer_without_haproxy_plans_and_then_fails_clearly(lab_site: Site, tmp_path: Path) -> None:
    """Before the packages phase: --plan says what will happen, a run fails with one line."""
    nodes = lab_site.nodes
    inventory = tmp_path / "cluster.yaml"
    inventory.write_text(yaml.safe_dump({
        "cluster": {"controlPlaneEndpoint": f"{lab_site.vip}:8443", "vip": lab_site.vip},
        "registry": "none",
        "ssh": {"user": "root", "keyFile": str(lab_site.ssh_key),
                "knownHosts": str(lab_site.known_hosts_file)},
        "hosts": [{"name": n.name, "address": n.address, "roles": ["control-plane"]} for n in nodes],
    }))
    bundle = write_test_bundle(tmp_path)
    plan = ok(install(bundle, inventory, "loadbalancer", tmp_path / "plan", "--plan"))
    for node in nodes:
        assert (f"[loadbalancer] {node.name}: would configure haproxy + keepalived for {lab_site.vip}"
                " (once the packages phase installed haproxy and keepalived)") in plan
    assert f"[loadbalancer] admin-host: would wait for VIP {lab_site.vip} on exactly one lb host" in plan
    result = install(bundle, inventory, "loadbalancer", tmp_path / "run")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert "haproxy and keepalived not installed; the packages phase installs" in last
    assert all(n.ssh("test -e /etc/keepalived/keepalived.conf", check=False).exit_status == 1 for n in nodes)
