"""Inventory rules for the API endpoint, the load balancer configs, grouped phases."""

from __future__ import annotations

import hashlib
import subprocess
import threading
import time
from types import SimpleNamespace

import pytest
from test_kubeadm_config import make_inventory

from kubeferry.errors import InputError, OperationError
from kubeferry.installer import inventory as inventory_module
from kubeferry.installer import lb_config
from kubeferry.installer.inventory import Host, SSHSettings
from kubeferry.installer.kube_commands import ca_cert_hash
from kubeferry.installer.operations import Step
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
