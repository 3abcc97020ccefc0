"""The site's air-gapped admin host, and the air-gap counter every lab namespace keeps."""

from __future__ import annotations

import tarfile

import pytest

from kubeferry.errors import OperationError
from kubeferry.lab import leftovers, scenario
from kubeferry.lab.admin_host import AdminHost
from kubeferry.lab.site import Site

pytestmark = [pytest.mark.real, pytest.mark.lab]

OUTSIDE = "203.0.113.1"  # TEST-NET-3: refused inside the namespace, never sent anywhere
OUTSIDE_RESOLVER = "203.0.113.53"


def test_the_admin_host_has_a_stock_python_and_ssh_and_nothing_else(lab_site_factory, tmp_path) -> None:
    site = lab_site_factory(nodes=1)
    admin = AdminHost.up(site)
    assert AdminHost.up(site).alive()  # asking again gives the running one
    node = site.nodes[0]
    assert admin.address == str(site.subnet.network_address + 3)
    assert admin.run(["sh", "-c", "command -v python3"]).stdout.strip() == "/usr/bin/python3"
    assert admin.run(["hostname"]).stdout.strip() == "admin"
    for module in ("yaml", "pip", "click", "paramiko"):
        assert admin.run(["python3", "-c", f"import {module}"]).returncode == 1, module
    routes = admin.run(["ip", "-4", "route"]).stdout
    assert "default dev eth0" in routes and " via " not in routes  # on-link: no gateway

    (tmp_path / "note.txt").write_text("carried across\n")
    assert admin.put(tmp_path / "note.txt", "/root/in/note.txt") == "/root/in/note.txt"
    assert admin.run(["cat", "/root/in/note.txt"]).stdout == "carried across\n"
    admin.put(site.ssh_key, "/root/site/id_ed25519", mode=0o600)
    admin.put(site.known_hosts_file, "/root/site/known_hosts")
    ssh = admin.run(["ssh", "-i", "/root/site/id_ed25519", "-o", "BatchMode=yes",
                     "-o", "UserKnownHostsFile=/root/site/known_hosts", "-o", "StrictHostKeyChecking=yes",
                     f"root@{node.address}", "hostname"], timeout=60)
    assert ssh.returncode == 0 and ssh.stdout.strip() == node.name, ssh.stderr
    # The admin host's file written by it is readable from the internet side.
    admin.run(["sh", "-c", "echo done > /root/out.txt"], check=True)
    assert admin.path("/root/out.txt").read_text() == "done\n"
    assert site.airgap_counts() == {node.name: 0, "admin": 0}

    # A bundle without the admin kit: the scenario says so in one line.
    old = tmp_path / "old-bundle.tar"
    with tarfile.open(old, "w") as archive:
        archive.add(tmp_path / "note.txt", arcname="metadata.json")
    sc = scenario.Scenario(site=site, harbor=None, bundle=old, inventory=tmp_path / "x.yaml",
                           work=tmp_path, admin=admin, admin_bundle=admin.put(old, "/root/old.tar"),
                           admin_inventory="/root/site/cluster.yaml")
    missing = r"^bundle old-bundle.tar has no kubeferry.pyz \(tar: "
    with pytest.raises(OperationError, match=missing) as raised:
        sc.kit()
    assert "\n" not in str(raised.value)

    # It cannot reach the internet side either: a new connection to .1 is counted and refused.
    refused = admin.run(["python3", "-c", "import socket; socket.create_connection"
                         f"(({site.admin_address!r}, 22), timeout=5)"])
    assert "Connection refused" in refused.stderr
    assert site.airgap_counts()["admin"] >= 1

    # The overlay is mounted only in the holder's namespace, which down's check can see.
    held = leftovers.foreign_mounts([site.data_directory])
    assert any(f"{site.data_directory}/admin/root " in f"{line} " for line in held), held
    assert leftovers.mounts_under([site.data_directory]) == []
    Site.down_named(site.name)
    assert leftovers.find(site.name) == []
    assert leftovers.foreign_mounts([site.data_directory]) == []


def test_the_air_gap_counter_counts_what_tries_to_leave(lab_site_factory) -> None:
    site = lab_site_factory(nodes=1)
    node = site.nodes[0]
    assert site.airgap_counts() == {node.name: 0}
    tried = node.ssh(f"timeout 10 bash -c 'echo > /dev/tcp/{OUTSIDE}/80'", check=False)
    assert tried.exit_status == 1 and "Connection refused" in tried.stderr
    after_tcp = site.airgap_counts()[node.name]
    assert after_tcp >= 1
    # refused before the packet reached eth0: the node never even asked who has the address
    assert node.ssh(f"ip neigh show {OUTSIDE}").stdout.strip() == ""

    # DNS to an outside resolver counts too (the lab's resolv.conf names none).
    node.ssh(f"cp /etc/resolv.conf /root/resolv.conf && echo 'nameserver {OUTSIDE_RESOLVER}' "
             "> /etc/resolv.conf")
    looked_up = node.ssh("timeout 20 getent hosts deb.debian.org", check=False)
    node.ssh("cp /root/resolv.conf /etc/resolv.conf")
    assert looked_up.exit_status != 0
    assert site.airgap_counts()[node.name] > after_tcp
    assert node.ssh(f"ip neigh show {OUTSIDE_RESOLVER}").stdout.strip() == ""
    assert set(site.airgap_destinations()[node.name]) == {OUTSIDE, OUTSIDE_RESOLVER}  # where to

    # Lab-to-lab traffic and the internet side's SSH to the node are not counted.
    before = site.airgap_counts()[node.name]
    assert node.ssh(f"ping -c1 -W2 {node.address}").ok
    assert site.airgap_counts()[node.name] == before
