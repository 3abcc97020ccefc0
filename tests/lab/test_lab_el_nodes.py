"""EL-flavoured lab nodes (``Site.up(os_name="el8")``): a Rocky 8 node to kubeferry, with
Debian's real rpm, dnf and firewalld, an rpm database holding comps @core, SELinux configured
enforcing, and no containerd until docker-ce's containerd.io is installed."""

from __future__ import annotations

import pytest

from kubeferry.lab.site import Site

pytestmark = [pytest.mark.real, pytest.mark.lab]


@pytest.fixture
def el8_node(el8_lab_site: Site):
    return el8_lab_site.nodes[0]


def run(node, command: str) -> str:
    return node.ssh(command, timeout=120).stdout


def test_the_node_reads_as_rocky_8(el8_node) -> None:
    release = dict(line.split("=", 1) for line in run(el8_node, "cat /etc/os-release").split("\n")
                   if "=" in line)
    assert (release["ID"], release["VERSION_ID"]) == ('"rocky"', '"8.8"')
    assert "rhel" in release["ID_LIKE"]
    for path in ("/etc/redhat-release", "/etc/system-release"):
        assert run(el8_node, f"cat {path}").strip() == "Rocky Linux release 8.8 (Green Obsidian)"
    assert el8_node.ssh("test -e /etc/debian_version", check=False).exit_status != 0


def test_rpm_holds_the_minimal_install_and_the_vendor_key(el8_node) -> None:
    names = set(run(el8_node, "rpm -qa --qf '%{NAME}\\n'").split())
    assert {"rocky-release", "basesystem", "glibc", "systemd", "firewalld", "chrony", "dnf",
            "openssl-libs", "gpg-pubkey"} <= names
    assert not names & {"containerd.io", "kubeadm", "socat", "conntrack-tools"}
    assert run(el8_node, "rpm -q --qf '%{VERSION}-%{RELEASE}' rocky-release") == "8.8-1.8.el8"
    # dnf (Debian's, on EL's platform-python path) sees the same database and the release
    assert "chrony" in run(el8_node, "dnf -q --disablerepo='*' list --installed chrony")
    assert run(el8_node, "rpm -q --provides rocky-release").count("system-release(releasever) = 8")


def test_firewalld_runs_and_selinux_is_configured_enforcing(el8_node) -> None:
    assert run(el8_node, "systemctl is-enabled firewalld").strip() == "enabled"
    assert run(el8_node, "firewall-cmd --state").strip() == "running"
    assert "SELINUX=enforcing" in run(el8_node, "cat /etc/selinux/config").split()
    # this kernel has no SELinux: the node is an EL booted with it off (getenforce is real)
    assert run(el8_node, "getenforce").strip() == "Disabled"
    assert run(el8_node, "systemctl is-system-running").strip() == "running"


def test_no_python_and_no_container_runtime_before_kubeferry(el8_node) -> None:
    assert el8_node.ssh("command -v python3 python3.6 python", check=False).exit_status != 0
    assert el8_node.ssh("command -v containerd runc ctr", check=False).exit_status != 0
    assert run(el8_node, "readlink -f /usr/bin/yum").strip() == "/usr/bin/dnf"
