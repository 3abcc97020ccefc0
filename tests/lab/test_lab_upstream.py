"""A lab site's upstream (the internet's stand-in on loopback): its lifecycle through
``kubeferry-lab``, and a real ``kubeferry bundle build`` against it whose apt repository
installs kubeadm/kubelet/kubectl on a lab node from the bundle alone."""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import requests
import yaml
from lab_build_cache import download_cache as build_cache

from kubeferry.bundle.reader import Bundle
from kubeferry.lab import proc, upstream_service
from kubeferry.lab.site import Site
from kubeferry.lab.upstream_packages import reference_dir

pytestmark = [pytest.mark.real, pytest.mark.lab]

K8S = "1.25.0"


def _lab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kubeferry.lab", *args], capture_output=True,
                          text=True, timeout=600)


def _upstream_processes(name: str) -> list[dict]:
    site = Site.load(name)
    assert site is not None
    return [r for r in site.journal.resources if r.get("upstream") and r["kind"] == "process"]


def test_upstream_up_status_down_through_the_cli(lab_site_factory) -> None:
    site = lab_site_factory(nodes=1)
    started = _lab("upstream", "up", "--k8s", K8S, "--name", site.name)
    assert started.returncode == 0, started.stderr
    sources_file = site.directory / "lab-sources.yaml"
    assert f"--sources {sources_file}" in started.stdout
    sources = yaml.safe_load(sources_file.read_text())
    registry = sources["registries"]["registry.k8s.io"]
    assert registry == sources["registries"]["docker.io"]
    assert registry.startswith("http://127.0.0.1:")
    assert sources["repositories"]["debian"] == "http://deb.debian.org/debian"

    # both processes outlived the command, recorded by pid and start time
    processes = _upstream_processes(site.name)
    assert sorted(r["role"] for r in processes) == ["upstream-packages", "upstream-registry"]
    assert all(proc.is_same_process(r["pid"], r["started"]) for r in processes)
    catalog = requests.get(f"{registry}/v2/_catalog", timeout=10).json()["repositories"]
    assert {"kube-apiserver", "coredns/coredns", "calico/node"} <= set(catalog)
    key = requests.get(sources["repositories"]["kubernetes-gpgkey"], timeout=10)
    assert key.status_code == 200 and key.content.startswith(b"-----BEGIN PGP PUBLIC KEY")
    status = _lab("status", "--name", site.name)
    assert status.returncode == 0 and "(packages): up" in status.stdout

    again = _lab("upstream", "up", "--k8s", K8S, "--name", site.name)
    assert again.returncode == 0 and "already up" in again.stderr
    assert _upstream_processes(site.name) == processes

    stopped = _lab("upstream", "down", "--name", site.name)
    assert stopped.returncode == 0, stopped.stderr
    assert not any(proc.is_same_process(r["pid"], r["started"]) for r in processes)
    assert _upstream_processes(site.name) == []
    assert not sources_file.exists() and not upstream_service.directory(site).exists()
    assert "no upstream up" in _lab("upstream", "down", "--name", site.name).stderr
    assert site.healthy(), "the nodes stay up"

    # the site's own down stops an upstream too (and checks nothing of it is left)
    assert _lab("upstream", "up", "--k8s", K8S, "--name", site.name).returncode == 0
    processes = _upstream_processes(site.name)
    assert _lab("down", "--name", site.name).returncode == 0
    assert not any(proc.is_same_process(r["pid"], r["started"]) for r in processes)


def test_upstream_refuses_bad_input_in_one_line(lab_site_factory) -> None:
    missing = _lab("upstream", "up", "--k8s", K8S, "--name", "nosuch")
    assert missing.returncode == 2 and "lab nosuch is not up" in missing.stderr
    site = lab_site_factory(nodes=1)
    bad_os = _lab("upstream", "up", "--k8s", K8S, "--os", "plan9", "--name", site.name)
    assert bad_os.returncode == 2 and "plan9" in bad_os.stderr
    assert len(bad_os.stderr.strip().splitlines()) == 1
    assert _upstream_processes(site.name) == []


def _packages_tar(bundle: Path, target: Path, prefix: str) -> Path:
    """The bundle members under ``prefix`` as a tar of their own (what a node receives)."""
    with tarfile.open(bundle) as source, tarfile.open(target, "w") as out:
        for member in source:
            if member.name.startswith(prefix) and member.isfile():
                out.addfile(member, source.extractfile(member))
    return target


def test_bundle_built_from_the_lab_upstream_installs_on_a_node(lab_upstream, lab_site_factory,
                                                                tmp_path: Path) -> None:
    """The session site's upstream (fixture ``lab_upstream``) for the build; a node of a
    site of its own for the install (the session site's nodes stay as they were)."""
    upstream = lab_upstream
    assert upstream.kubernetes == K8S and upstream.sources_file.is_file()
    site = lab_site_factory(nodes=1)
    build = subprocess.run(
        [sys.executable, "-m", "kubeferry.cli", "bundle", "build", "--k8s", K8S, "--os",
         "debian12", "--include", "images,packages,files", "--sources",
         str(upstream.sources_file), "--cache-dir", str(build_cache()), "--output",
         str(tmp_path / "out"), "--quiet"],
        capture_output=True, text=True, timeout=1800)
    assert build.returncode == 0, build.stderr
    bundle_file = Path(build.stdout.strip().splitlines()[-1])
    bundle = Bundle.open(bundle_file)
    bundle.verify()
    metadata = bundle.metadata
    assert set(metadata["include"]) >= {"images", "packages", "files"}
    assert {i["name"] for i in bundle.images} >= {f"registry.k8s.io/kube-apiserver:v{K8S}",
                                                  "docker.io/calico/node:v3.24.5"}
    calico = bundle.read_member("files/calico.yaml")
    assert calico == (reference_dir() / "calico-v3.24.5.yaml").read_bytes()
    section = metadata["packages"]
    repos = {row["name"]: row["repo"] for row in section["packages"]}
    assert repos["kubeadm"] == "kubernetes" and repos["conntrack"].startswith("bookworm")
    wanted = [spec for spec in section["install"]
              if spec.split("=")[0] in ("kubeadm", "kubelet", "kubectl")]
    assert wanted == [f"{name}={K8S}-1.1" for name in ("kubeadm", "kubelet", "kubectl")]

    node = site.nodes[0]
    node.put(_packages_tar(bundle_file, tmp_path / "packages.tar", "packages/debian12/"),
             "/tmp/packages.tar")
    # The bundle's flat repository is the only source apt knows (the node has no route out).
    node.ssh("mkdir -p /opt/kubeferry && tar -xf /tmp/packages.tar -C /opt/kubeferry && "
             "rm -f /etc/apt/sources.list /etc/apt/sources.list.d/* && echo "
             "'deb [trusted=yes] file:/opt/kubeferry/packages/debian12 ./' "
             "> /etc/apt/sources.list.d/kubeferry.list")
    node.ssh("apt-get update", timeout=300)
    install = node.ssh("DEBIAN_FRONTEND=noninteractive apt-get install -y "
                       f"--no-install-recommends {' '.join(map(shlex.quote, wanted))}",
                       check=False, timeout=600)
    assert install.exit_status == 0, install.stdout + install.stderr
    query = node.ssh("dpkg-query -W -f '${Package} ${Version} ${Status}\\n' kubeadm kubelet "
                     "kubectl cri-tools kubernetes-cni conntrack socat").stdout.splitlines()
    installed = {line.split()[0]: line.split(None, 2)[1:] for line in query}
    for name in ("kubeadm", "kubelet", "kubectl"):
        assert installed[name] == [f"{K8S}-1.1", "install ok installed"], name
    for name in ("cri-tools", "kubernetes-cni", "conntrack", "socat"):
        assert installed[name][1] == "install ok installed", name
    assert node.ssh("kubeadm version -o short").stdout.strip() == f"v{K8S}"
    assert node.ssh("systemctl cat kubelet.service").exit_status == 0
    assert node.ssh("command -v python3 python3.11 python", check=False).exit_status != 0
    # every installed .deb is byte for byte the one the bundle's metadata names
    pool = {row["name"]: row["sha256"] for row in section["packages"]}
    archives = node.ssh("sha256sum /opt/kubeferry/packages/debian12/pool/kubeadm_*.deb")
    assert archives.stdout.split()[0] == pool["kubeadm"]
    assert hashlib.sha256(calico).hexdigest() == metadata["files"]["files"][0]["sha256"]
