"""The lab's nodes, on one session-wide 3-node site: real systemd, sshd, containerd, air gap."""

from __future__ import annotations

import shlex
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from lab_oci_layout import image_layout_tar

from kubeferry.errors import OperationError
from kubeferry.lab import network
from kubeferry.lab.remote import Connection
from kubeferry.lab.site import Site

pytestmark = [pytest.mark.real, pytest.mark.lab]

# Units allowed to fail in a lab node. None today: a failure here is a regression.
EXPECTED_FAILED_UNITS: set[str] = set()


def test_every_node_answers_ssh_with_its_pinned_host_key(lab_site: Site) -> None:
    assert [n.name for n in lab_site.nodes] == ["node1", "node2", "node3"]
    for node in lab_site.nodes:
        assert node.ssh("hostname").stdout.strip() == node.name
        assert node.ssh("id -u").stdout.strip() == "0"
    lines = lab_site.known_hosts_file.read_text().splitlines()
    assert sorted(line.split()[0] for line in lines) == sorted(n.address for n in lab_site.nodes)


def test_a_wrong_host_key_is_refused(lab_site: Site, tmp_path: Path) -> None:
    node1, node2 = lab_site.nodes[:2]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{node1.address} {node2.host_key}\n")  # node2's key for node1's address
    connection = Connection(node1.address, lab_site.ssh_key, wrong)
    with pytest.raises(OperationError, match="(?i)host key"):
        connection.run("true")
    unknown = tmp_path / "empty_known_hosts"
    unknown.write_text("")
    with pytest.raises(OperationError, match="(?i)not found in known_hosts"):
        Connection(node1.address, lab_site.ssh_key, unknown).run("true")


def test_openssh_client_logs_in_with_the_site_files(lab_site: Site) -> None:
    node = lab_site.nodes[0]
    argv = ["ssh", "-i", str(lab_site.ssh_key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={lab_site.known_hosts_file}",
            "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10",
            f"root@{node.address}", "cat /etc/hostname"]
    result = subprocess.run(argv, capture_output=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == node.name


def test_the_sudo_user_logs_in_and_sudoes(lab_site: Site) -> None:
    node = lab_site.nodes[0]
    user = Connection(node.address, lab_site.ssh_key, lab_site.known_hosts_file,
                      user=lab_site.sudo_user)
    try:
        assert user.run("id -un").stdout.strip() == lab_site.sudo_user
        assert user.run("sudo -n id -u").stdout.strip() == "0"
    finally:
        user.close()


def test_systemd_is_pid_1_and_the_system_is_running(lab_site: Site) -> None:
    for node in lab_site.nodes:
        assert node.ssh("cat /proc/1/comm").stdout.strip() == "systemd"
        state = node.ssh("systemctl is-system-running", check=False).stdout.strip()
        failed = node.ssh("systemctl list-units --failed --plain --no-legend").stdout
        failed_units = {line.split()[0] for line in failed.splitlines() if line.strip()}
        assert failed_units <= EXPECTED_FAILED_UNITS, f"{node.name}: {failed_units}"
        assert state == ("degraded" if failed_units else "running")
        for unit in ("ssh", "containerd", "systemd-journald"):
            assert node.ssh(f"systemctl is-active {unit}").stdout.strip() == "active"
        assert node.ssh("systemd-detect-virt --container", check=False).stdout.strip()


def test_each_node_is_a_distinct_machine(lab_site: Site) -> None:
    facts = {}
    for node in lab_site.nodes:
        out = node.ssh(
            "hostname; cat /etc/machine-id /sys/class/dmi/id/product_uuid; "
            "cat /etc/ssh/ssh_host_ed25519_key.pub"
        ).stdout.split("\n")
        facts[node.name] = out
        assert out[0] == node.name
        assert out[1] == node.machine_id and len(out[1]) == 32
        assert out[2] == node.product_uuid
        assert " ".join(out[3].split()[:2]) == node.host_key
    for column in range(4):
        values = [facts[name][column] for name in facts]
        assert len(set(values)) == len(values), f"column {column} repeats: {values}"


def test_nodes_reach_each_other_but_have_no_route_out(lab_site: Site) -> None:
    """The only route beyond the subnet is on-link (no gateway): it exists so that the
    air-gap counter sees what tries to leave (lab/airgap.py), which the node refuses."""
    node1, node2 = lab_site.nodes[:2]
    routes = node1.ssh("ip -4 route show").stdout.strip().splitlines()
    assert len(routes) == 2 and routes[0].strip() == "default dev eth0 scope link", routes
    assert routes[1].startswith(f"{lab_site.subnet} dev eth0 "), routes
    _connects(node1, node2.address, 22)
    assert node1.ssh("ip -6 addr show", check=False).stdout.strip() == ""


def test_air_gap_nodes_cannot_open_connections_to_the_admin_host(lab_site: Site) -> None:
    """A listener on the admin host's lab address: the host reaches it, nodes cannot."""
    with _listener(lab_site.admin_address) as port:
        with socket.create_connection((lab_site.admin_address, port), timeout=5):
            pass  # the host itself can
        for node in lab_site.nodes:
            _refused(node, lab_site.admin_address, port)
    with _listener("127.0.0.1") as port:
        _refused(lab_site.nodes[0], "127.0.0.1", port)


def test_air_gap_holds_even_when_a_node_adds_a_default_route(lab_site: Site) -> None:
    """A build-side host outside the lab subnet (its own namespace, routed from this host):
    the admin host reaches it; a node that routes everything via the admin host cannot, even
    with its own air-gap counter rules flushed (root on a node can): this machine's
    firewall holds the gap."""
    # Named like the site's own links: if this test leaked them, the site's down would fail.
    build_ns, host_end = f"kf-{lab_site.name}-build", f"kf-{lab_site.name}-b0"
    outside_host, outside_peer = "198.18.99.1", "198.18.99.2"
    node = lab_site.nodes[0]
    try:
        subprocess.run(["ip", "netns", "add", build_ns], check=True)
        subprocess.run(["ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0",
                        "netns", build_ns], check=True)
        subprocess.run(["ip", "addr", "add", f"{outside_host}/30", "dev", host_end], check=True)
        subprocess.run(["ip", "link", "set", host_end, "up"], check=True)
        for argv in (["ip", "addr", "add", f"{outside_peer}/30", "dev", "eth0"],
                     ["ip", "link", "set", "eth0", "up"], ["ip", "link", "set", "lo", "up"]):
            subprocess.run(network.in_netns(build_ns, argv), check=True)
        server = subprocess.Popen(
            network.in_netns(build_ns, ["python3", "-c", _SERVE, outside_peer]),
            stdout=subprocess.PIPE, text=True,
        )
        try:
            port = int(server.stdout.readline())  # type: ignore[union-attr]
            with socket.create_connection((outside_peer, port), timeout=5):
                pass  # the build side is reachable from the admin host
            node.ssh("iptables-save > /root/rules.v4 && iptables -F OUTPUT")
            node.ssh(f"ip route replace default via {lab_site.admin_address}")
            _refused(node, outside_peer, port)
        finally:
            node.ssh("ip route replace default dev eth0", check=False)
            node.ssh("iptables-restore < /root/rules.v4 && rm /root/rules.v4", check=False)
            server.kill()
            server.wait(timeout=10)
    finally:
        subprocess.run(["ip", "link", "del", host_end], check=False)
        subprocess.run(["ip", "netns", "del", build_ns], check=False)
    assert node.ssh("ip -4 route show default").stdout.strip() == "default dev eth0 scope link"
    assert lab_site.airgap_counts()[node.name] >= 0  # its counter is back


def test_containerd_imports_unpacks_and_runs_an_image(lab_site: Site, tmp_path: Path) -> None:
    node = lab_site.nodes[1]
    name = "registry.lab.example/kubeferry/hello:v1"
    archive = tmp_path / "hello.tar"
    archive.write_bytes(image_layout_tar(name, b"hello from the admin host\n"))
    node.put(archive, "/tmp/hello.tar")
    node.ssh("ctr -n k8s.io images import /tmp/hello.tar && rm /tmp/hello.tar", timeout=120)
    images = node.ssh("ctr -n k8s.io images ls -q").stdout.split()
    assert name in images
    check = node.ssh(f"ctr -n k8s.io images check name=={shlex.quote(name)}").stdout
    assert "complete (2/2)" in check and check.split()[-1] == "true", check  # unpacked
    snapshots = node.ssh("ctr -n k8s.io snapshots --snapshotter overlayfs ls").stdout
    assert len(snapshots.strip().splitlines()) >= 2, snapshots  # header + the unpacked layer
    # The unpacked layer holds the file: containerd's state sits on a real file system.
    found = node.ssh(
        "cat /var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/*/fs/hello.txt"
    ).stdout
    assert found == "hello from the admin host\n"
    assert node.ssh("stat -f -c %T /var/lib/containerd").stdout.strip() != "overlayfs"
    # runc runs it too, both cgroup drivers, as long as no CPU or memory limit is asked for:
    # the host's cgroup controllers may sit on cgroup v1 (see docs/lab.md).
    for driver in ("", "--runc-systemd-cgroup --cgroup system.slice:kubeferry:hello "):
        out = node.ssh(
            f"ctr -n k8s.io run --rm --cpu-shares 0 {driver}"
            "--mount type=bind,src=/usr,dst=/usr,options=rbind:ro "
            f"{shlex.quote(name)} hello-run /bin/cat /hello.txt", timeout=60,
        ).stdout
        assert out == "hello from the admin host\n"
    node.ssh(f"ctr -n k8s.io images rm {shlex.quote(name)}")


def test_modprobe_knows_the_modules_this_kernel_has(lab_site: Site) -> None:
    node = lab_site.nodes[0]
    # Built into (or loadable on) every kernel that can run the lab: bridges and overlays.
    node.ssh("modprobe br_netfilter && modprobe overlay")
    assert node.ssh("cat /proc/sys/net/bridge/bridge-nf-call-iptables").stdout.strip() in "01"


def test_a_node_sets_its_own_network_sysctls_not_the_hosts(lab_site: Site) -> None:
    node = lab_site.nodes[2]
    host_forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    try:
        node.ssh("sysctl -q -w net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1")
        assert node.ssh("cat /proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
        assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == host_forward
    finally:
        node.ssh("sysctl -q -w net.ipv4.ip_forward=0")


def test_link_shaping_applies_and_clears(lab_site: Site) -> None:
    node = lab_site.nodes[2]
    try:
        lab_site.shape(node, rate="100mbit")
        assert "tbf" in subprocess.run(["tc", "qdisc", "show", "dev", node.veth],
                                       capture_output=True, text=True, check=True).stdout
        assert "tbf" in node.ssh("tc qdisc show dev eth0").stdout
        _connects(lab_site.nodes[0], node.address, 22)
        try:  # latency needs netem: applied where the kernel has it, refused in one line if not
            lab_site.shape(node, rate="100mbit", delay="1ms")
        except OperationError as error:
            assert "CONFIG_NET_SCH_NETEM" in str(error)
        else:
            assert "netem" in node.ssh("tc qdisc show dev eth0").stdout
    finally:
        lab_site.shape(node, rate=None, delay=None)
    assert "tbf" not in node.ssh("tc qdisc show dev eth0").stdout
    assert "netem" not in node.ssh("tc qdisc show dev eth0").stdout


def test_status_reports_every_node_up(lab_site: Site) -> None:
    rows = lab_site.status()
    assert [(r["name"], r["state"]) for r in rows] == [
        ("node1", "ssh"), ("node2", "ssh"), ("node3", "ssh")
    ]
    assert lab_site.healthy()


# -- helpers ------------------------------------------------------------------------------

_SERVE = """
import socket, sys
server = socket.socket()
server.bind((sys.argv[1], 0))
server.listen()
print(server.getsockname()[1], flush=True)
server.settimeout(60)
while True:
    try:
        server.accept()[0].close()
    except OSError:
        break
"""


def _connects(node, address: str, port: int) -> None:
    node.ssh(f"timeout 5 bash -c 'exec 3<>/dev/tcp/{address}/{port}'")


def _refused(node, address: str, port: int) -> None:
    result = node.ssh(f"timeout 5 bash -c 'exec 3<>/dev/tcp/{address}/{port}'", check=False)
    assert result.exit_status != 0, f"{node.name} reached {address}:{port}"


class _listener:
    """A TCP listener on ``address`` that accepts and drops connections, for reachability."""

    def __init__(self, address: str):
        self.server = socket.socket()
        self.server.bind((address, 0))
        self.server.listen()
        self.server.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                self.server.accept()[0].close()
            except OSError:
                continue

    def __enter__(self) -> int:
        self.thread.start()
        return self.server.getsockname()[1]

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.server.close()
