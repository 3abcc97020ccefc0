"""A lab site made ready for the install phases init/join/cni/verify/loadbalancer.

The node-preparing phases (os, packages, containerd, images, registry) are another part
of kubeferry with their own lab tests; this harness does their job directly so the cluster
phases are tested on their own against the lab's kubeadm/kubelet doubles and real kubectl, on real
nodes (the lab's base already carries the doubles' Python, hidden from PATH, and the
shared cluster state, docs/lab-doubles.md):

- a Harbor stand-in: Debian's docker-registry with TLS on the site's .2 address, holding
  stand-in images under the names kubeferry maps bundle images to (harbor_names);
- on every node, with apt from local files: the Debian packages kubeadm's exec checks and
  the HA pair need (downloaded once by the admin host's apt from Debian's mirror, for
  exactly what the node's dpkg status lacks), then the stand-in kubeadm/kubelet/kubectl/
  cri-tools/CNI packages; double.conf naming the registry; containerd with SystemdCgroup,
  the Harbor pause image as sandbox and certs.d/hosts.toml with the Harbor CA; the two
  sysctls kubeadm checks; kubelet enabled;
- a bundle holding the real calico.yaml (files/) and the release's metadata.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from kubeferry import __version__
from kubeferry.bundle.format import bundle_filename
from kubeferry.bundler.content import Member
from kubeferry.bundler.writer import write_bundle
from kubeferry.installer.harbor_names import harbor_name
from kubeferry.installer.inventory import RegistrySettings
from kubeferry.lab.double_state import ClusterRecord
from kubeferry.lab.doubles_recipe import DOUBLE_CONF, double_conf
from kubeferry.lab.node import Node
from kubeferry.lab.registry import Registry
from kubeferry.lab.site import HARBOR_HOST, Site
from kubeferry.lab.standin_images import push_image
from kubeferry.lab.standin_packages import build_debs
from kubeferry.lab.upstream_packages import reference_dir
from kubeferry.versions import image_set

VERSION = "1.25.0"
PROJECT = "google_containers"
CALICO = reference_dir() / "calico-v3.24.5.yaml"
# What kubeadm's exec checks (conntrack, socat, ebtables, ethtool) need beyond the lab's
# base, and the HA pair.
APT_PACKAGES = ("conntrack", "socat", "ebtables", "ethtool", "haproxy", "keepalived")
PREP = "/root/kubeferry-test-prep"


def cache_root() -> Path:
    path = Path(os.environ.get("KUBEFERRY_TEST_CACHE", "/var/cache/kubeferry-test"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def node_debs(status: bytes) -> list[Path]:
    """Debian packages (APT_PACKAGES and what they need) for a node with this dpkg status.

    The admin host's apt resolves against the node's status file and downloads from
    Debian's mirror into a cache keyed by that status, reused by later runs.
    """
    key = hashlib.sha256(status + "\n".join(APT_PACKAGES).encode()).hexdigest()[:16]
    target = cache_root() / f"cluster-node-debs-{key}"
    done = target / ".complete"
    with open(cache_root() / "cluster-node-debs.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            (target / "archives" / "partial").mkdir(parents=True, exist_ok=True)
            (target / "status").write_bytes(status)
            download = ["apt-get", "-q", "-y", "--download-only", "--no-install-recommends",
                        "-o", f"Dir::State::status={target / 'status'}",
                        "-o", f"Dir::Cache::archives={target / 'archives'}",
                        "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=",
                        "-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=root",
                        "install", *APT_PACKAGES]
            if subprocess.run(download, capture_output=True, timeout=900).returncode != 0:
                # the admin host's package lists may be older than the mirror: refresh once
                subprocess.run(["apt-get", "-q", "update"], check=True, capture_output=True, timeout=900)
                subprocess.run(download, check=True, capture_output=True, timeout=900)
            done.touch()
    return sorted((target / "archives").glob("*.deb"))


def _containerd_config(sandbox: str) -> str:
    return f"""version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{sandbox}"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/opt/cni/bin"
      conf_dir = "/etc/cni/net.d"
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "/etc/containerd/certs.d"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = true
  [plugins."io.containerd.internal.v1.opt"]
    path = "/var/lib/containerd/opt"
"""


def write_test_bundle(workdir: Path) -> Path:
    """A bundle with the release's metadata and the real calico.yaml (no images: the harness
    puts them in the Harbor stand-in)."""
    images = image_set(VERSION)
    member = Member.from_file("files/calico.yaml", CALICO)
    metadata = {
        "kubernetes": VERSION, "os": "debian12", "arch": "amd64", "created": "2026-01-01T00:00:00Z",
        "kubeferryVersion": __version__, "include": ["files"], "sources": {},
        "imageSet": {"kubeadmRepository": images.kubeadm_repository, "pause": images.pause,
                     "pauseImage": images.pause_image, "etcd": images.etcd, "coredns": images.coredns,
                     "calico": images.calico, "kubeadmImages": list(images.kubeadm_images),
                     "calicoImages": list(images.calico_images),
                     "checkImages": list(images.check_images)},
        "images": [],
        "files": {"calico": images.calico, "files": [
            {"name": "calico.yaml", "url": images.calico_manifest_url, "sha256": member.sha256,
             "size": member.size, "path": member.path}]},
    }
    target = workdir / bundle_filename(VERSION, "debian12", "amd64")
    write_bundle(target, metadata, [member])
    return target


def kubeferry(*args: str) -> subprocess.CompletedProcess[str]:
    """The kubeferry CLI as an operator runs it (a new process each time)."""
    argv = [sys.executable, "-c", "import sys; from kubeferry.cli import main; sys.argv[0] = 'kubeferry';"
            " main()", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)


def install(bundle: Path, inventory: Path, phases: str, run_dir: Path,
            *extra: str) -> subprocess.CompletedProcess[str]:
    """``kubeferry install`` as an operator runs it."""
    return kubeferry("install", "--bundle", str(bundle), "--inventory", str(inventory), "--only", phases,
                     "--yes", "--run-dir", str(run_dir), *extra)


class ClusterLab:
    """One lab site with a Harbor stand-in and nodes ready for kubeadm (the doubles)."""

    def __init__(self, site: Site, workdir: Path, run_control_plane: bool = True) -> None:
        self.site = site
        self.run_control_plane = run_control_plane  # the kubelet double runs etcd and the API server
        self.workdir = workdir
        self.harbor = site.add_host("harbor", HARBOR_HOST)
        self.registry: Registry | None = None
        self.settings = RegistrySettings(url=f"https://{self.harbor.address}", project=PROJECT)
        self.record = ClusterRecord(site.cluster_state)
        self._bundle: Path | None = None

    # -- the site ---------------------------------------------------------------------------

    def start(self) -> ClusterLab:
        self.registry = Registry(self.workdir / "harbor", addr=self.harbor.address, port=443, tls=True,
                                 netns=self.harbor.netns).start()
        self._push_images()
        debs = self.workdir / "standin-debs"
        debs.mkdir()
        standins = build_debs(VERSION, debs)
        status = self.site.nodes[0].ssh("cat /var/lib/dpkg/status").stdout.encode()
        packages = node_debs(status) + standins
        with ThreadPoolExecutor(max_workers=len(self.site.nodes)) as pool:
            list(pool.map(lambda node: self._prepare(node, packages), self.site.nodes))
        return self

    def stop(self) -> None:
        if self.registry is not None:
            self.registry.stop()
            self.registry = None

    def site_image(self, upstream: str) -> str:
        return harbor_name(upstream, self.settings)

    def _push_images(self) -> None:
        assert self.registry is not None
        for upstream in image_set(VERSION).images:  # busybox for the DNS check included
            name = self.site_image(upstream).split("/", 1)[1]
            repository, tag = name.rsplit(":", 1)
            push_image(self.registry.url, repository, tag, [f"stand-in {upstream}".encode()],
                       shape="oci-manifest", ca_file=self.registry.ca_file)

    def _prepare(self, node: Node, packages: list[Path]) -> None:
        assert self.registry is not None and self.registry.ca_file is not None
        node.ssh(f"mkdir -p {PREP}")
        for deb in packages:
            node.put(deb, f"{PREP}/{deb.name}")
        # apt (offline: local files only) orders the pre-dependencies dpkg -i would trip over
        node.ssh(f"cd {PREP} && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends"
                 f" ./*.deb >{PREP}/apt.log 2>&1 || {{ tail -20 {PREP}/apt.log; exit 1; }}", timeout=900)
        node.ssh("! command -v python3 python3.11 python")  # the doubles' Python stays hidden
        host = self.settings.host
        certs = f"/etc/containerd/certs.d/{host}"
        pause = self.site_image(image_set(VERSION).pause_image)
        files = {
            DOUBLE_CONF: double_conf(wait_timeout=180, run_control_plane=self.run_control_plane),
            "/etc/containerd/config.toml": _containerd_config(pause),
            f"{certs}/ca.crt": Path(self.registry.ca_file).read_text(),
            f"{certs}/hosts.toml": f'server = "https://{host}"\n\n[host."https://{host}"]\n'
                                   f'  capabilities = ["pull", "resolve"]\n  ca = "{certs}/ca.crt"\n',
        }
        for path, content in files.items():
            node.ssh(f"mkdir -p \"$(dirname {shlex.quote(path)})\" && cat > {shlex.quote(path)}",
                     stdin=content.encode())
        node.ssh("systemctl restart containerd && sysctl -qw net.bridge.bridge-nf-call-iptables=1"
                 f" net.ipv4.ip_forward=1 && systemctl enable -q kubelet && rm -rf {PREP}", timeout=180)

    # -- kubeferry's inputs -------------------------------------------------------------------

    def bundle(self) -> Path:
        if self._bundle is None:
            self._bundle = write_test_bundle(self.workdir)
        return self._bundle

    def inventory(self, control_planes: int, workers: int, *, endpoint: str | None = None,
                  vip: bool = False, known_hosts: Path | None = None, **cluster: Any) -> Path:
        nodes = self.site.nodes
        hosts = [{"name": n.name, "address": n.address,
                  "roles": ["control-plane"] if i < control_planes else ["worker"]}
                 for i, n in enumerate(nodes[:control_planes + workers])]
        settings: dict[str, Any] = {"controlPlaneEndpoint": endpoint or f"{nodes[0].address}:6443",
                                    "podSubnet": "10.244.0.0/16", **cluster}
        if vip:
            settings["vip"] = self.site.vip
        data = {
            "cluster": settings,
            "registry": {"url": self.settings.url, "project": PROJECT, "caFile": self.registry.ca_file},
            "ssh": {"user": "root", "keyFile": str(self.site.ssh_key),
                    "knownHosts": str(known_hosts or self.site.known_hosts_file)},
            "hosts": hosts,
        }
        path = self.workdir / "cluster.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def install(self, inventory: Path, phases: str, run_dir: Path,
                *extra: str) -> subprocess.CompletedProcess[str]:
        return install(self.bundle(), inventory, phases, run_dir, *extra)
