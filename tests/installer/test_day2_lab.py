"""Day 2 on the air-gap lab's real nodes (the kubeadm/kubelet/kubectl doubles, real etcd,
haproxy and keepalived): a control plane added (SANs re-issued, haproxy backends updated on
every lb host), remove-node (a worker; a control plane; refused where etcd would lose its
quorum), certs check and renew, reset and a fresh install, through the CLI."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path
from typing import Callable, Iterator

import pytest
import yaml
from cluster_lab import ClusterLab, kubeferry
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from test_cluster_lab import ok

from kubeferry.lab.node import Node
from kubeferry.lab.site import Site

pytestmark = [pytest.mark.real, pytest.mark.lab]

ALL = "loadbalancer,init,join,cni,verify"
PKI = "/etc/kubernetes/pki"


@pytest.fixture
def cluster_lab(lab_site_factory, tmp_path: Path) -> Iterator[Callable[[int], ClusterLab]]:
    """Sites whose control planes run for real (etcd, the API server stand-in): Day 2 waits
    for API servers to stop and to answer /healthz."""
    made: list[ClusterLab] = []

    def make(nodes: int) -> ClusterLab:
        lab = ClusterLab(lab_site_factory(nodes), tmp_path, run_control_plane=True)
        made.append(lab)
        return lab.start()

    yield make
    for lab in made:
        lab.stop()


def inventory(lab: ClusterLab, path: Path, roles: dict[str, str], vip: bool = False) -> Path:
    """``roles``: node name -> control-plane | worker, in inventory order."""
    site = lab.site
    first = site.node(next(iter(roles)))
    data = {
        "cluster": {"controlPlaneEndpoint": f"{site.vip}:8443" if vip else f"{first.address}:6443",
                    "podSubnet": "10.244.0.0/16", "proxyMode": "iptables",
                    **({"vip": site.vip} if vip else {})},
        "registry": {"url": lab.settings.url, "project": lab.settings.project,
                     "caFile": lab.registry.ca_file},
        "ssh": {"user": "root", "keyFile": str(site.ssh_key), "knownHosts": str(site.known_hosts_file)},
        "hosts": [{"name": name, "address": site.node(name).address, "roles": [role]}
                  for name, role in roles.items()],
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def day2(*args: str):
    return kubeferry(*args)


def failed(result, code: int) -> str:
    """The one line a refusal prints (exit ``code``, no traceback)."""
    assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("kubeferry: "), line
    return line.removeprefix("kubeferry: ")


def apiserver_sans(node: Node) -> set[str]:
    cert = x509.load_pem_x509_certificate(node.ssh(f"cat {PKI}/apiserver.crt").stdout.encode())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    addresses = {str(a) for a in names.get_values_for_type(x509.IPAddress)}
    return set(names.get_values_for_type(x509.DNSName)) | addresses


def served_not_after(node: Node) -> datetime.datetime:
    pem = ssl.get_server_certificate((node.address, 6443), timeout=10)
    return x509.load_pem_x509_certificate(pem.encode()).not_valid_after_utc


def shorten(node: Node, stem: str, ca: str, days: float) -> None:
    """Sign ``stem``'s certificate again with the cluster's CA, valid for ``days`` only."""
    old = x509.load_pem_x509_certificate(node.ssh(f"cat {PKI}/{stem}.crt").stdout.encode())
    ca_cert = x509.load_pem_x509_certificate(node.ssh(f"cat {PKI}/{ca}.crt").stdout.encode())
    ca_key = serialization.load_pem_private_key(node.ssh(f"cat {PKI}/{ca}.key").stdout.encode(), None)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(old.subject).issuer_name(ca_cert.subject)
               .public_key(old.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1))
               .not_valid_after(now + datetime.timedelta(days=days)))
    for extension in old.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    pem = builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    node.ssh(f"cat > {PKI}/{stem}.crt", stdin=pem)


def haproxy_backends(node: Node, site: Site) -> set[str]:
    config = node.ssh("cat /etc/haproxy/haproxy.cfg").stdout
    return {n.name for n in site.nodes if f"{n.address}:6443" in config}


def test_a_control_plane_added_certificates_renewed_and_one_removed(cluster_lab, tmp_path: Path) -> None:
    lab = cluster_lab(4)
    site = lab.site
    node1, node2, node3, node4 = site.nodes
    two = inventory(lab, tmp_path / "two.yaml", {"node1": "control-plane", "node2": "control-plane",
                                                 "node3": "worker"}, vip=True)
    assert "3 nodes Ready" in ok(lab.install(two, ALL, tmp_path / "run1"))

    # two etcd members: removing one would leave 1, fewer than a majority of 2
    refused = failed(day2("remove-node", "node2", "--inventory", str(two), "--yes", "--run-dir",
                          str(tmp_path / "rm0")), 1)
    assert refused.startswith("removing control plane node2 would leave 1 of 2 etcd members,"
                              " fewer than the 2")
    assert node2.ssh("test -e /etc/kubernetes/manifests/etcd.yaml", check=False).exit_status == 0
    assert failed(day2("remove-node", "node2", "--inventory", str(two)), 2) == (
        "remove-node drains, deletes and resets node2: pass --yes to confirm")

    # a third control plane: it joins; the others' apiserver certificates lack it and are
    # issued again; every lb host (the control planes) balances over it
    three = inventory(lab, tmp_path / "three.yaml", {"node1": "control-plane", "node2": "control-plane",
                                                     "node3": "worker", "node4": "control-plane"}, vip=True)
    assert not {"node4", node4.address} & apiserver_sans(node1)
    grown = ok(lab.install(three, ALL, tmp_path / "run2"))
    assert "[join] node4: changed" in grown and "4 nodes Ready" in grown, grown
    assert "[join] admin-host: changed" in grown and "re-issued" in grown, grown
    for node in (node1, node2, node4):
        assert {"node4", node4.address, "node1", node2.address} <= apiserver_sans(node), node.name
        assert haproxy_backends(node, site) == {"node1", "node2", "node4"}, node.name
        assert "[loadbalancer] " + node.name in grown
    calls = [" ".join(c["argv"][1:5]) for c in lab.record.invocations(program="kubeadm")]
    assert "init phase upload-config kubeadm" in calls
    assert "init phase upload-certs --upload-certs" in calls  # a new certificate key for node4's join
    assert calls.count("init phase certs apiserver") == 2  # node1 and node2, node4 had them
    # the same install again: nothing to re-issue
    again = ok(lab.install(three, ALL, tmp_path / "run3"))
    assert "re-issued" not in again and "[join] admin-host: ok" in again

    # certificates: one near its end fails the check, one within 30 days warns; renew fixes both
    report = ok(day2("certs", "check", "--inventory", str(three), "--run-dir", str(tmp_path / "c1")))
    assert report.splitlines()[0].split() == ["HOST", "CERTIFICATE", "EXPIRES", "RESIDUAL", "TIME"]
    assert sum(1 for line in report.splitlines() if " apiserver " in line) == 3
    shorten(node2, "apiserver", "ca", 5)
    shorten(node1, "front-proxy-client", "front-proxy-ca", 20)
    check = day2("certs", "check", "--inventory", str(three), "--run-dir", str(tmp_path / "c2"))
    assert failed(check, 1).startswith("node2 apiserver expires in 4d (")
    assert "warning: node1 front-proxy-client expires in 19d (" in check.stderr
    before = served_not_after(node2)
    renewed = ok(day2("certs", "renew", "--inventory", str(three), "--run-dir", str(tmp_path / "c3")))
    for node in ("node1", "node2", "node4"):
        assert f"[certs] {node}: certificates renewed; kube-apiserver" in renewed
    assert ok(day2("certs", "check", "--inventory", str(three), "--run-dir", str(tmp_path / "c4")))
    assert served_not_after(node2) > before  # the restarted API server serves the renewed certificate
    renew_calls = [c for c in lab.record.invocations(program="kubeadm")
                   if c["argv"][1:3] == ["certs", "renew"]]
    assert [c["node"] for c in renew_calls] == ["node1", "node2", "node4"]
    assert all(a["time"] + a["duration"] <= b["time"] for a, b in zip(renew_calls, renew_calls[1:]))

    # three members: node4 may go; the others' haproxy and /etc/hosts follow
    removed = ok(day2("remove-node", "node4", "--inventory", str(three), "--yes", "--run-dir",
                      str(tmp_path / "rm1")))
    assert "[remove-node] node4: drained" in removed and "[remove-node] node4: Node deleted" in removed
    assert "[loadbalancer] node1: changed" in removed and "[os] node2: changed" in removed, removed
    assert removed.strip().splitlines()[-1].startswith("node4 removed; now delete it from")
    for node in (node1, node2):
        assert haproxy_backends(node, site) == {"node1", "node2"}
        assert f"{node4.address} node4" not in node.ssh("cat /etc/hosts").stdout
    leftovers = node4.ssh("find /etc/kubernetes/manifests /var/lib/kubeferry/phases -mindepth 1 2>/dev/null"
                          " | wc -l")
    assert leftovers.stdout.strip() == "0"
    # with node4 deleted from the inventory, install finds the membership phases done
    after = ok(lab.install(two, ALL, tmp_path / "run4"))
    assert "[loadbalancer] node1: done" in after and "3 nodes Ready" in after, after


def test_a_worker_removed_then_the_cluster_reset_and_installed_afresh(cluster_lab, tmp_path: Path) -> None:
    lab = cluster_lab(3)
    node1, node2, node3 = lab.site.nodes
    full = inventory(lab, tmp_path / "full.yaml",
                     {"node1": "control-plane", "node2": "worker", "node3": "worker"})
    assert "3 nodes Ready" in ok(lab.install(full, ALL, tmp_path / "run1"))

    removed = ok(day2("remove-node", "node3", "--inventory", str(full), "--yes",
                      "--run-dir", str(tmp_path / "rm")))
    assert "[remove-node] node3: drained (from node1)" in removed
    assert "[remove-node] node3: kubeadm reset; CNI state" in removed
    listed = node1.ssh("kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes -o name").stdout
    assert "node3" not in listed
    for node in (node1, node2):
        assert f"{node3.address} node3" not in node.ssh("cat /etc/hosts").stdout
    assert node3.ssh("test -e /etc/kubernetes/kubelet.conf", check=False).exit_status == 1
    smaller = inventory(lab, tmp_path / "smaller.yaml", {"node1": "control-plane", "node2": "worker"})
    assert "2 nodes Ready" in ok(lab.install(smaller, ALL, tmp_path / "run2"))
    # the same removal again: node3 is gone already, nothing fails
    again = ok(day2("remove-node", "node3", "--inventory", str(full), "--yes",
                    "--run-dir", str(tmp_path / "rm2")))
    assert "not registered in the cluster" in again

    # what kube-proxy and calico leave on a node, beside the lab's own air-gap rules
    node2.ssh("iptables -N KUBE-SERVICES && iptables -A OUTPUT -j KUBE-SERVICES"
              " && iptables -N cali-INPUT && iptables -A INPUT -m comment --comment cali:abc -j cali-INPUT"
              " && mkdir -p /etc/cni/net.d /var/lib/calico && echo {} > /etc/cni/net.d/10-calico.conflist")
    rules_before = node2.ssh("iptables-save | grep -c KUBEFERRY-AIRGAP").stdout
    assert failed(day2("reset", "--inventory", str(full)), 2).startswith("reset tears down the cluster of")
    reset = ok(day2("reset", "--inventory", str(full), "--yes", "--run-dir", str(tmp_path / "reset")))
    assert reset.strip().splitlines()[-1] == "3 hosts reset: ready for `kubeferry install`"
    assert not (tmp_path / "full-admin.conf").exists()
    saved = node2.ssh("iptables-save").stdout
    assert "KUBE-" not in saved and "cali" not in saved
    assert node2.ssh("iptables-save | grep -c KUBEFERRY-AIRGAP").stdout == rules_before
    for node in lab.site.nodes:
        left = node.ssh("find /etc/cni/net.d /var/lib/calico /var/lib/kubeferry/phases"
                        " /etc/kubernetes/manifests -mindepth 1 2>/dev/null | wc -l")
        assert left.stdout.strip() == "0", node.name
    assert lab.record.init_config() is None  # the cluster is gone

    fresh = ok(lab.install(full, ALL, tmp_path / "run3"))
    assert "[init] node1: changed" in fresh and "3 nodes Ready" in fresh, fresh
