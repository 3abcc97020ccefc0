"""Inventory validation: every bad case is one line naming the key, exit 2."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubeferry.errors import InputError
from kubeferry.installer import inventory

GOOD = yaml.safe_load(inventory.example())


def parse(mutate) -> inventory.Inventory:
    data = copy.deepcopy(GOOD)
    mutate(data)
    return inventory.parse(data, "cluster.yaml")


def test_example_is_valid() -> None:
    inv = inventory.parse(GOOD, "example")
    assert [h.name for h in inv.control_planes] == ["master1", "master2", "master3"]
    assert [h.name for h in inv.workers] == ["node1", "node2"]
    assert inv.host("node2").ssh.port == 2222 and inv.host("node1").ssh.port == 22
    assert inv.registry.repository == "harbor.example.local/google_containers"
    assert inv.cluster.endpoint_port == 8443 and not inv.warnings  # haproxy beside apiserver
    assert inv.os.firewalld == "stopped" and inv.os.reboot_timeout is None


def _set(path: str, value):
    def mutate(data):
        node = data
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node[key]
        last = keys[-1]
        if value is KeyError:
            del node[last]
        else:
            node[int(last) if last.isdigit() else last] = value
    return mutate


@pytest.mark.parametrize("mutate, words", [
    (_set("cluster.controlPlaneEndpoint", "no-port"), ["cluster.controlPlaneEndpoint", "HOST:PORT"]),
    (_set("cluster.podSubnet", "10.244.0.0/33"), ["cluster.podSubnet"]),
    (_set("cluster.podSubnet", "10.96.0.0/16"), ["overlaps"]),
    (_set("cluster.serviceSubnet", "192.168.40.0/24"), ["serviceSubnet", "master1"]),
    (_set("cluster.vip", "192.168.40.180"), ["cluster.vip", "node's address"]),
    (_set("cluster.proxyMode", "nftables"), ["proxyMode"]),
    (_set("cluster.bogus", 1), ["cluster.bogus", "unknown key"]),
    (_set("cluster", KeyError), ["cluster", "required"]),
    (_set("registry", KeyError), ["registry", "required"]),
    (_set("registry.url", "harbor.local"), ["registry.url"]),
    (_set("registry.project", "Google"), ["registry.project"]),
    (_set("registry.password", "hunter2"), ["registry.password", "passwordFrom"]),
    (_set("registry.passwordFrom", "vault:x"), ["registry.passwordFrom"]),
    (_set("ssh.port", 70000), ["ssh.port"]),
    (_set("ssh.sudo", "yes"), ["ssh.sudo", "bool"]),
    (_set("hosts", []), ["hosts"]),
    (_set("hosts.1.name", "master1"), ["master1", "twice"]),
    (_set("hosts.1.address", "192.168.40.180"), ["192.168.40.180", "twice"]),
    (_set("hosts.1.address", "not-an-ip"), ["hosts[1].address"]),
    (_set("hosts.0.roles", ["master"]), ["hosts[0].roles"]),
    (_set("hosts.0.name", "Master_1"), ["hosts[0].name"]),
    (_set("hosts.4.ssh", {"prot": 22}), ["hosts[4].ssh.prot"]),
    (_set("os.firewalld", False), ["os.firewalld", "must be a str"]),  # YAML's bare `off`
    (_set("os.firewalld", "opened"), ["os.firewalld", "stopped", "open"]),
    (_set("os.rebootTimeout", 0), ["os.rebootTimeout", "(0, 3600]"]),
    (_set("os.reboot", 60), ["os.reboot", "unknown key"]),
])
def test_bad_inventories(mutate, words: list[str]) -> None:
    with pytest.raises(InputError) as error:
        parse(mutate)
    message = str(error.value)
    assert "\n" not in message and message.startswith("cluster.yaml: ")
    for word in words:
        assert word in message, message


def test_no_control_plane_and_even_count() -> None:
    def workers_only(data):
        for host in data["hosts"]:
            host["roles"] = ["worker"]
    with pytest.raises(InputError, match="control-plane"):
        parse(workers_only)
    two = parse(lambda data: data["hosts"].__delitem__(2))
    assert any("odd number" in warning for warning in two.warnings)


def test_registry_none_and_plaintext_when_asked() -> None:
    assert parse(_set("registry", "none")).registry is None
    def plaintext(data):
        data["registry"].pop("passwordFrom")
        data["registry"].update(password="hunter2", allowPlaintextPassword=True)
    assert parse(plaintext).registry.password.read() == "hunter2"


def test_secret_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARBOR_PASSWORD", "from-env")
    assert inventory.SecretRef("env:HARBOR_PASSWORD").read() == "from-env"
    (tmp_path / "pw").write_text("from-file\n")
    assert inventory.SecretRef(f"file:{tmp_path}/pw").read() == "from-file"
    assert inventory.SecretRef("stdin").read(lambda: "typed\n") == "typed"
    with pytest.raises(InputError, match="NOPE is not set"):
        inventory.SecretRef("env:NOPE").read()


def test_cli_bad_inventory_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "cluster.yaml"
    bad.write_text("cluster: {controlPlaneEndpoint: x}\n")
    result = subprocess.run([sys.executable, "-m", "kubeferry.cli", "install", "--bundle",
                             str(tmp_path / "b.tar"), "--inventory", str(bad), "--plan"],
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "controlPlaneEndpoint" in result.stderr
    bad.write_text("cluster: [\n")
    result = subprocess.run([sys.executable, "-m", "kubeferry.cli", "install", "--bundle", "x",
                             "--inventory", str(bad), "--plan"],
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and "not valid YAML" in result.stderr
    example = subprocess.run([sys.executable, "-m", "kubeferry.cli", "inventory", "example"],
                             capture_output=True, text=True, timeout=60)
    assert inventory.parse(yaml.safe_load(example.stdout)).hosts
