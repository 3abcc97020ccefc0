"""Inventory rules for the API endpoint, the load balancer configs, grouped phases."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import subprocess
import threading
import time
from types import SimpleNamespace

import pytest
from cluster_lab import write_test_bundle
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fake_node import FakeNode
from test_kubeadm_config import make_inventory

from kubeferry.bundle.reader import Bundle
from kubeferry.errors import InputError, OperationError
from kubeferry.installer import inventory as inventory_module
from kubeferry.installer import lb_config
from kubeferry.installer.context import InstallContext, InstallOptions
from kubeferry.installer.inventory import Host, SSHSettings
from kubeferry.installer.kube_commands import ca_cert_hash
from kubeferry.installer.operations import Step
from kubeferry.installer.phases import join
from kubeferry.installer.phases.verify import foreign_images
from kubeferry.installer.ssh import redact
from kubeferry.installer.workflow import HostGroup, Phase, run_phase


def test_endpoint_beside_apiserver_needs_another_port() -> None:
    with pytest.raises(InputError, match=r"port 6443.*use another port, e.g. 10.0.0.100:8443"):
        make_inventory(endpoint="10.0.0.100:6443")
    make_inventory(endpoint="10.0.0.100:8443")


def test_endpoint_ip_must_be_the_vip() -> None:
    with pytest.raises(InputError, match="is not on cluster.vip 10.0.0.100"):
        make_inventory(endpoint="10.0.0.11:8443")


def test_lb_hosts_may_use_6443_and_need_a_vip() -> None:
    hosts = [{"name": "cp1", "address": "10.0.0.11", "roles": ["control-plane"]},
             {"name": "lb1", "address": "10.0.0.31", "roles": ["lb"]},
             {"name": "lb2", "address": "10.0.0.32", "roles": ["lb"]}]
    inventory = inventory_module.parse({"cluster": {"controlPlaneEndpoint": "10.0.0.100:6443",
                                                    "vip": "10.0.0.100"},
                                        "registry": "none", "hosts": hosts})
    assert [h.name for h in inventory.lb_hosts] == ["lb1", "lb2"]
    with pytest.raises(InputError, match="role lb need cluster.vip"):
        inventory_module.parse({"cluster": {"controlPlaneEndpoint": "10.0.0.31:6443"},
                                "registry": "none", "hosts": hosts})


def test_haproxy_and_keepalived_configs() -> None:
    inventory = make_inventory(endpoint="10.0.0.100:8443")
    haproxy = lb_config.haproxy_cfg(inventory)
    assert "bind *:8443" in haproxy and "option httpchk GET /healthz" in haproxy
    for i in (1, 2, 3):
        assert f"server cp{i} 10.0.0.1{i}:6443 check check-ssl verify none" in haproxy
    second = lb_config.keepalived_conf(inventory, inventory.host("cp2"), "eth0")
    assert "priority 140" in second and "virtual_router_id 100" in second
    assert "unicast_src_ip 10.0.0.12" in second
    assert "        10.0.0.11\n        10.0.0.13\n" in second and "        10.0.0.12\n" not in second
    assert "10.0.0.100/32 dev eth0" in second
    assert "script \"/etc/keepalived/kubeferry-check-haproxy.sh\"" in second
    assert ":20FB " in lb_config.check_script(inventory)  # 8443
    single = make_inventory(endpoint="10.0.0.100:8443", control_planes=1)
    assert "unicast_peer" not in lb_config.keepalived_conf(single, single.first_control_plane, "eth0")
    assert "$" not in haproxy + second  # every placeholder filled
    assert lb_config.router_id("10.0.0.0") == 255


def test_secrets_are_redacted_and_the_ca_hash_is_kubeadms(tmp_path) -> None:
    assert redact("join --token abc.def failed", ["abc.def", ""]) == "join --token <redacted> failed"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(tmp_path / "k"), "-out", str(tmp_path / "c"), "-subj", "/CN=x",
                    "-days", "1"], check=True, capture_output=True, timeout=60)
    pubkey = subprocess.run(["openssl", "x509", "-in", str(tmp_path / "c"), "-noout", "-pubkey"],
                            check=True, capture_output=True, timeout=60).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pubkey,
                         check=True, capture_output=True, timeout=60).stdout
    assert ca_cert_hash((tmp_path / "c").read_bytes()) == "sha256:" + hashlib.sha256(der).hexdigest()
    with pytest.raises(OperationError, match="not a PEM certificate"):
        ca_cert_hash(b"nope")


def _host(name: str) -> Host:
    return Host(name=name, address="10.0.0.1", roles=("worker",), ssh=SSHSettings())


def test_groups_run_in_order_serial_then_parallel_and_stop_at_a_failure() -> None:
    events: list[tuple[str, str, float]] = []
    lock = threading.Lock()
    workers_together = threading.Barrier(3, timeout=30)  # only passes if all three run at once

    def apply(ctx, host) -> str:
        with lock:
            events.append(("start", host.name, time.monotonic()))
        if host.name.startswith("w"):
            workers_together.wait()
        else:
            time.sleep(0.2)
        if host.name == "bad":
            raise OperationError("bad failed")
        with lock:
            events.append(("end", host.name, time.monotonic()))
        return "did"

    ctx = SimpleNamespace(options=SimpleNamespace(plan=False, forks=10), log=lambda host: lambda line: None,
                          conn=lambda host: None)
    groups = [HostGroup([_host("cp2"), _host("cp3")], parallel=False),
              HostGroup([_host("w1"), _host("w2"), _host("w3")], parallel=True)]
    phase = Phase(name="join", short="", steps=lambda c, host: [Step("join", run=lambda: apply(c, host))],
                  marker=False, groups=lambda c: groups)
    results = run_phase(ctx, phase)
    assert [r.status for r in results] == ["changed"] * 5
    starts = {name: t for kind, name, t in events if kind == "start"}
    ends = {name: t for kind, name, t in events if kind == "end"}
    assert starts["cp3"] >= ends["cp2"]  # control planes one at a time
    assert min(starts[w] for w in ("w1", "w2", "w3")) >= ends["cp3"]  # workers after them

    events.clear()
    groups[0] = HostGroup([_host("bad"), _host("cp3")], parallel=False)
    results = run_phase(ctx, phase)
    assert [(r.host, r.status) for r in results] == [("bad", "failed")]


def _pod(node: str, *images: str) -> dict:
    return {"spec": {"nodeName": node, "containers": [{"image": image} for image in images]}}


def test_verify_finds_images_from_outside_the_site() -> None:
    harbor = make_inventory({"url": "https://harbor.lab", "project": "k8s"}).registry
    pods = [_pod("cp1", "harbor.lab/k8s/pause:3.8", "docker.io/library/nginx:1"),
            _pod("w1", "harbor.lab/k8s/x:1")]
    assert foreign_images(pods, harbor, lambda node: set()) == (3, ["docker.io/library/nginx:1"])
    imported = {"cp1": {"registry.k8s.io/pause:3.8"}, "w1": set()}
    pods = [_pod("cp1", "registry.k8s.io/pause:3.8"), _pod("w1", "registry.k8s.io/pause:3.8")]
    assert foreign_images(pods, None, imported.__getitem__) == (1, ["registry.k8s.io/pause:3.8 on w1"])
    imported["w1"] = {"registry.k8s.io/pause:3.8"}
    assert foreign_images(pods, None, imported.__getitem__) == (1, [])


def test_keepalived_options_per_os_family() -> None:
    assert lb_config.defaults_file("deb") == ("/etc/default/keepalived", 'DAEMON_ARGS="--vrrp"\n')
    assert lb_config.defaults_file("rpm") == ("/etc/sysconfig/keepalived", 'KEEPALIVED_OPTIONS="-D --vrrp"\n')


def _self_signed(*names: str) -> str:
    """A certificate (its own CA) for ``names``: what the fake control plane's pki holds."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName(
                       [x509.IPAddress(ipaddress.ip_address(n)) if n[0].isdigit() else x509.DNSName(n)
                        for n in names]), critical=False)
                   .sign(key, hashes.SHA256()))
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def test_a_join_refused_on_the_servers_certificate_says_what_to_do(tmp_path) -> None:
    """kubeadm join's discovery refused the certificate of the API server the endpoint led to
    (x509; kubeadm retries that until its discovery timeout, 5 min, so this is not tried on the
    lab): the join phase's error is one line naming the node, carrying kubeadm's reason and
    saying what to do, with no secret. The control plane's own certificate names everything,
    so the check before the joins has nothing to re-issue."""
    site = inventory_module.parse({
        "cluster": {"controlPlaneEndpoint": "k8s-api.example.local:6443"},
        "registry": "none",
        "hosts": [{"name": "cp1", "address": "10.0.0.11", "roles": ["control-plane"]},
                  {"name": "w1", "address": "10.0.0.21", "roles": ["worker"]}],
    })
    token = "abcdef.0123456789abcdef"
    pem = _self_signed("k8s-api.example.local", "cp1", "10.0.0.11")
    refused = ('error execution phase preflight: couldn\'t validate the identity of the API Server: Get'
               ' "https://k8s-api.example.local:6443/api/v1/namespaces/kube-public/configmaps/cluster-info'
               '?timeout=10s": x509: certificate is valid for other-cluster, not k8s-api.example.local\n'
               'To see the stack trace of this error execute with --v=5 or higher\n')
    common = [(r"^cat /var/lib/kubeferry/phases/", ("", 1)), (r"^rm -f ", "")]
    nodes = {
        "cp1": FakeNode(site.hosts[0], [*common, (r"^cat /etc/kubernetes/pki/(apiserver|ca)\.crt ", pem),
                                        (r"^kubeadm token create ", token + "\n")]),
        "w1": FakeNode(site.hosts[1], [*common, (r"^test -e /etc/kubernetes/kubelet\.conf", ("", 1)),
                                       (r"^mkdir -p ", ""), (r"^sha256sum ", ("", 1)),
                                       (r"^kubeadm join ", (refused, 1))]),
    }
    ctx = InstallContext(inventory=site, bundle=Bundle.open(write_test_bundle(tmp_path)),
                         options=InstallOptions(plan=False, run_dir=tmp_path / "run"),
                         connector=lambda host: nodes[host.name], echo=lambda text: None)
    results = run_phase(ctx, join.PHASE)
    assert [(r.host, r.status) for r in results] == [("w1", "failed")], results
    detail = results[0].detail
    assert detail.startswith("w1: `kubeadm join --config /var/lib/kubeferry/kubeadm/join.yaml` exited 1:"
                             " error execution phase preflight: couldn't validate the identity of the API"
                             " Server: "), detail
    advice = ("x509: certificate is valid for other-cluster, not k8s-api.example.local; the API server this"
              " node reached through k8s-api.example.local:6443 is not one of the inventory's control planes")
    assert advice in detail
    assert "make k8s-api.example.local lead this node to them" in detail
    assert "\n" not in detail and token not in detail and token.split(".")[1] not in detail
    assert not any(c.startswith("kubeadm init phase") for c in nodes["cp1"].commands)  # nothing to re-issue
