"""Harness for the lab doubles' tests: the real programs they talk to, in throwaway places.

Each test node is a directory standing in for a node's root (KUBEFERRY_DOUBLE_ROOT) with
its own real containerd (socket under that root, stopped by pid). The doubles run from
the extracted stand-in .debs (shebang pointed at this interpreter) inside a network
namespace the session made, where a real docker-registry serves the site's images.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from kubeferry.lab.containerd import Containerd as LabContainerd
from kubeferry.lab.double_state import ClusterRecord

VERSION = "1.25.0"
REGISTRY = "127.0.0.1:5000"
READY_TIMEOUT = 20.0
KUBE_IMAGES = [
    "kube-apiserver:v1.25.0",
    "kube-controller-manager:v1.25.0",
    "kube-scheduler:v1.25.0",
    "kube-proxy:v1.25.0",
    "pause:3.8",
    "etcd:3.5.4-0",
]
SITE_IMAGES = (
    [f"google_containers/{i}" for i in KUBE_IMAGES + ["coredns:v1.9.3"]]
    + [f"nested/{i}" for i in KUBE_IMAGES + ["coredns/coredns:v1.9.3"]]
    + ["calico/cni:v3.24.5", "calico/node:v3.24.5", "calico/kube-controllers:v3.24.5", "library/busybox:1.28"]
)
PUSH_SCRIPT = """
import json, sys
from kubeferry.lab.standin_images import push_image
url, names = sys.argv[1], json.loads(sys.argv[2])
for ref in names:
    name, tag = ref.rsplit(":", 1)
    push_image(url, name, tag, [("stand-in " + ref).encode()], shape="oci-manifest")
"""


class Containerd(LabContainerd):
    """A real containerd whose config file is the node's /etc/containerd/config.toml."""

    def __init__(self, root: Path) -> None:
        self.root = root
        super().__init__(workdir=root, config=root / "etc/containerd/config.toml",
                         socket=root / "run/containerd/containerd.sock")

    def write_config(
        self,
        systemd_cgroup: bool = True,
        sandbox: str = f"{REGISTRY}/google_containers/pause:3.8",
        config_path: str = "/etc/containerd/certs.d",
    ) -> None:
        self.config.parent.mkdir(parents=True, exist_ok=True)
        self.config.write_text(f"""version = 2
root = "{self.root}/var/lib/containerd"
state = "{self.root}/run/containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{self.socket}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{self.root}/opt/containerd"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{config_path}"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = {"true" if systemd_cgroup else "false"}
""")


class Kubelet:
    """Runs the kubelet double the way systemd's Restart=always would, until stopped (by pid)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.stopping = threading.Event()
        self.process: subprocess.Popen[bytes] | None = None
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        log = open(self.node.root / "kubelet.log", "ab")  # noqa: SIM115 - closed below
        try:
            while not self.stopping.is_set():
                self.process = subprocess.Popen(
                    self.node.command("kubelet"),
                    env=self.node.env(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                while self.process.poll() is None and not self.stopping.is_set():
                    time.sleep(0.1)
                if not self.stopping.is_set():
                    time.sleep(0.5)  # RestartSec, shortened
        finally:
            log.close()

    def stop(self) -> None:
        self.stopping.set()
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=15)
        self.thread.join(timeout=20)


class Node:
    """One lab node stand-in: a root directory, its containerd, and the doubles run inside the netns."""

    def __init__(self, name: str, base: Path, state: Path, packages: Path, netns: str) -> None:
        self.name = name
        self.root = base / name
        self.state = state
        self.packages = packages
        self.netns = netns
        self.kubelet: Kubelet | None = None
        self.containerd = Containerd(self.root)
        (self.root / "var").mkdir(parents=True)
        (self.root / "var/run").symlink_to("../run")  # as on Debian
        self.healthy_proc()
        conf = self.root / "etc/kubeferry-lab/double.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text("wait_timeout: 30\nheartbeat_interval: 1\n")
        hosts = self.root / f"etc/containerd/certs.d/{REGISTRY}/hosts.toml"
        hosts.parent.mkdir(parents=True, exist_ok=True)
        hosts.write_text(
            f'server = "http://{REGISTRY}"\n\n[host."http://{REGISTRY}"]\n'
            '  capabilities = ["pull", "resolve"]\n'
        )
        (self.root / "root").mkdir(parents=True, exist_ok=True)
        self.containerd.write_config()
        self.containerd.start()

    def healthy_proc(self) -> None:
        files = {
            "proc/swaps": "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n",
            "proc/sys/net/bridge/bridge-nf-call-iptables": "1\n",
            "proc/sys/net/ipv4/ip_forward": "1\n",
            "proc/meminfo": Path("/proc/meminfo").read_text(),
        }
        for name, text in files.items():
            self.write(name, text)

    def write(self, path: str, text: str) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def env(self) -> dict[str, str]:
        return {
            "PATH": f"{self.packages}/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.root / "root"),
            "LANG": "C.UTF-8",
            "KUBEFERRY_DOUBLE_ROOT": str(self.root),
            "KUBEFERRY_DOUBLE_STATE": str(self.state),
            "KUBEFERRY_DOUBLE_NODE": self.name,
            "KUBEFERRY_DOUBLE_CONF": str(self.root / "etc/kubeferry-lab/double.conf"),
        }

    def command(self, program: str, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, str(self.packages / "usr/bin" / program), *args]

    def run(
        self, program: str, *args: str, stdin: str | None = None, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(program, *args),
            env=self.env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def config(self, name: str, text: str) -> str:
        path = self.root / "root" / name
        path.write_text(text)
        return str(path)

    def start_kubelet(self) -> None:
        if self.kubelet is None:
            self.kubelet = Kubelet(self)

    def stop(self) -> None:
        if self.kubelet is not None:
            self.kubelet.stop()
            self.kubelet = None
        self.containerd.stop()


class Lab:
    """The nodes of one test, sharing one cluster state directory."""

    def __init__(self, packages: Path, netns: str) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="kfd", dir="/tmp"))  # short: unix socket paths
        self.state = self.base / "cluster"
        self.packages = packages
        self.netns = netns
        self.nodes: list[Node] = []

    def node(self, name: str) -> Node:
        node = Node(name, self.base, self.state, self.packages, self.netns)
        self.nodes.append(node)
        return node

    @property
    def record(self) -> ClusterRecord:
        return ClusterRecord(self.state)

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.base, ignore_errors=True)


ENDPOINT = "127.0.0.11:6443"  # the host's resolver, which real kubectl uses, knows no lab names


def api_node(lab: Lab, name: str, kubelet_port: int = 10250) -> Node:
    """A node whose kubelet double runs the control plane's static pods and reports to the API,
    as the lab sets it. The test nodes share one network namespace, so only one control plane
    runs (its etcd and API server bind 127.0.0.1:2379 and :6443; HA runs on the lab's nodes,
    tests/e2e) and each kubelet gets its own port (kubeadm's preflight checks 10250)."""
    made = lab.node(name)
    made.write("etc/kubeferry-lab/double.conf", "wait_timeout: 60\nheartbeat_interval: 1\n"
               f"run_control_plane: true\netcd_binary: /usr/bin/etcd\nkubelet_port: {kubelet_port}\n"
               "discovery_timeout: 3s\n")
    return made
