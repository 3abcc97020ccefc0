"""Node preparation pieces without a lab: fact parsers, idempotent operations, rpm key ids
(checked against real rpm), containerd's config (checked by real containerd), preflight's
judgement, chrony's configuration."""

from __future__ import annotations

import subprocess
from pathlib import Path

from el_bundle import armored, key_id, public_key_packet
from fake_node import FakeNode

from kubeferry.installer import facts, inventory, operations
from kubeferry.installer.phases import os_setup, preflight
from kubeferry.installer.timesync import allow_lines
from kubeferry.lab.signing import SigningKey
from kubeferry.openpgp import rpm_key_ids


def make_host(name: str, address: str, role: str = "worker") -> inventory.Host:
    return inventory.Host(name=name, address=address, roles=(role,), ssh=inventory.SSHSettings())


HOST = make_host("n1", "10.0.0.11", "control-plane")


def node(*answers: tuple[str, object]) -> FakeNode:
    return FakeNode(HOST, list(answers))


# -- facts ------------------------------------------------------------------------------------------


def test_module_states_from_modprobe_dry_runs() -> None:
    out = ("br_netfilter\t0\t\n"
           "ip_vs\t1\tmodprobe: FATAL: Module ip_vs not found in directory /lib/modules/6.1 \n"
           "overlay\t0\tinsmod /lib/modules/6.1/kernel/fs/overlay/overlay.ko \n")
    fact = facts.module_states(["br_netfilter", "ip_vs", "overlay"])
    assert fact.parse(out) == {
        "br_netfilter": "loaded", "overlay": "loadable",
        "ip_vs": "missing: modprobe: FATAL: Module ip_vs not found in directory /lib/modules/6.1"}
    assert "modprobe -n -v" in fact.command and "/proc/modules" not in fact.command


def test_package_database_facts() -> None:
    debs = facts.installed_debs(["kubeadm", "tar", "gone"])
    assert debs.parse("kubeadm\t1.25.0-1.1\thi \ntar\t1.34\tii \nold\t1\trc \n") == {
        "kubeadm": "1.25.0-1.1", "tar": "1.34"}
    assert debs.command.endswith("|| true")  # one unknown name must not hide the others
    rpms = facts.installed_rpms(["kernel-ml", "kubeadm"])
    assert rpms.parse("kernel-ml\t(none):4.19.12-1.el7.elrepo\nkernel-ml\t0:5.4.1-1.el7.elrepo\n"
                      "package kubeadm is not installed\n") == {
        "kernel-ml": ["0:4.19.12-1.el7.elrepo", "0:5.4.1-1.el7.elrepo"]}
    assert facts.RPM_GPG_KEYS.parse("F4A80EB5\npackage gpg-pubkey is not installed\n") == {"f4a80eb5"}


def test_containerd_image_digests() -> None:
    out = ("REF                                   TYPE                                       DIGEST"
           "                                                                  SIZE    PLATFORMS   LABELS\n"
           "registry.k8s.io/pause:3.8 application/vnd.oci.image.manifest.v1+json sha256:" + "a" * 64
           + " 311.0 KiB linux/amd64 io.cri-containerd.image=managed\n")
    assert facts.CONTAINERD_IMAGE_DIGESTS.parse(out) == {"registry.k8s.io/pause:3.8": "sha256:" + "a" * 64}


def test_service_state_reads_an_inactive_unit() -> None:
    conn = node((r"systemctl is-enabled", ("enabled\n\ninactive\n", 0)))
    assert facts.service_state("kubelet").read(conn) == (True, False)
    assert facts.service_state("kubelet").command.endswith("; true")


def test_space_and_sizes() -> None:
    assert facts.path_space("/var/lib/x").parse("/var 1234\n") == ("/var", 1234)
    assert facts.file_sizes_under("/d").parse("12 a/b\n3 c\n") == {"a/b": 12, "c": 3}


# -- operations -------------------------------------------------------------------------------------


def test_marked_block_is_added_replaced_and_then_left_alone() -> None:
    original = "127.0.0.1 localhost\n::1 localhost\n"
    first = operations.with_block(original, "kubeferry", ["10.0.0.11 n1"])
    assert first.startswith(original) and "# BEGIN kubeferry" in first and first.endswith("# END kubeferry\n")
    both = ["10.0.0.11 n1", "10.0.0.12 n2"]
    second = operations.with_block(first + "10.9.9.9 added-by-hand\n", "kubeferry", both)
    assert second.count("# BEGIN kubeferry") == 1 and "10.0.0.12 n2" in second
    assert second.endswith("10.9.9.9 added-by-hand\n")  # only the block changes
    assert operations.with_block(second, "kubeferry", both) == second
    damaged = "a\n# BEGIN kubeferry\nb\nc\n"  # END lost: nothing after BEGIN is dropped
    repaired = operations.with_block(damaged, "kubeferry", ["x"]).splitlines()
    assert repaired[-4:] == ["x", "# END kubeferry", "b", "c"]


def test_fstab_swap_lines_commented_once() -> None:
    fstab = "/dev/sda1 / ext4 defaults 0 1\n/swap.img none swap sw 0 0\n#/dev/sdb2 none swap sw 0 0\n"
    once = os_setup.without_swap(fstab)
    assert once == "/dev/sda1 / ext4 defaults 0 1\n#/swap.img none swap sw 0 0\n#/dev/sdb2 none swap sw 0 0\n"
    assert os_setup.without_swap(once) == once


# -- rpm key ids ----------------------------------------------------------------------------------


def test_rpm_key_ids_match_what_rpm_imports(tmp_path: Path) -> None:
    """A real key from gpg, imported by real rpm into a scratch database: same id."""
    with SigningKey("t", home=tmp_path / "gnupg") as signing:
        key = signing.public
    (tmp_path / "key.asc").write_bytes(key)
    rpm = ["rpm", "--dbpath", str(tmp_path / "rpmdb")]
    subprocess.run([*rpm, "--initdb"], check=True, capture_output=True, timeout=60)
    subprocess.run([*rpm, "--import", str(tmp_path / "key.asc")], check=True, capture_output=True, timeout=60)
    listed = subprocess.run([*rpm, "-q", "gpg-pubkey", "--qf", "%{VERSION}\n"], check=True,
                            capture_output=True, text=True, timeout=60).stdout.split()
    assert rpm_key_ids(key) == listed


def test_rpm_key_ids_of_binary_and_armored_keys() -> None:
    packet = public_key_packet(b"x")
    assert rpm_key_ids(packet) == rpm_key_ids(armored(packet)) == [key_id(packet)]
    assert rpm_key_ids(b"not a key") == []


# -- preflight and chrony ---------------------------------------------------------------------------


def test_duplicates_name_the_other_hosts() -> None:
    hosts = [make_host(f"n{i}", f"10.0.0.{i}") for i in range(3)]
    found = {h.name: preflight.NodeFacts(h, product_uuid=uuid, macs=macs)
             for h, uuid, macs in zip(hosts, ["a", "a", "b"], [["m1"], ["m2"], ["m1", "m3"]])}
    by_uuid = preflight.shared_values(found, lambda n: [n.product_uuid])
    assert by_uuid == {"n0": {"a": ["n1"]}, "n1": {"a": ["n0"]}}
    assert preflight.shared_values(found, lambda n: n.macs) == {"n0": {"m1": ["n2"]}, "n2": {"m1": ["n0"]}}


def test_chrony_server_allows_its_subnet_and_nodes_outside_it() -> None:
    server = make_host("cp", "10.88.0.11", "control-plane")
    far, near = make_host("far", "10.99.0.5"), make_host("near", "10.88.0.12")
    lines = allow_lines(server, ["127.0.0.1/8", "10.88.0.11/24"], [server, near, far])
    assert lines == ["allow 10.88.0.0/24", "allow 10.99.0.5"]


def test_versionlock_entries_of_dnf_and_yum_are_read() -> None:
    from kubeferry.installer.versionlock import parse_entry

    assert parse_entry("kubeadm-0:1.25.0-0.*") == ("kubeadm", "0:1.25.0-0")  # dnf
    assert parse_entry("0:kubelet-1.25.0-150500.1.1.*") == ("kubelet", "0:1.25.0-150500.1.1")  # yum
    assert parse_entry("python3-dnf-plugin-versionlock-0:4.0.21-19.el8_8.*") == (
        "python3-dnf-plugin-versionlock", "0:4.0.21-19.el8_8")
    assert parse_entry("!kubeadm-0:1.26.0-0.*") is None  # an exclude, not a lock
    assert parse_entry("Last metadata expiration check: 0:01:02 ago") is None
