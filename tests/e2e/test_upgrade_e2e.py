"""``kubeferry upgrade`` on the lab, end to end: HA (3 control planes, VIP, 1 worker) installed
at 1.25.0 from the air-gapped admin host, refused upgrades (another OS, two minors, an older
bundle: exit 2, one line), a patch upgrade killed in the middle of the worker and resumed,
then the next minor; a re-run changes nothing; every kubelet and control-plane component at
the release, as real kubectl reads it from the API server stand-ins."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from kubeferry.lab import scenario
from kubeferry.lab.double_state import ClusterRecord
from kubeferry.lab.kubectl_release import kubectl_binary

PATCH, MINOR = "1.25.4", "1.26.4"


def _kit_only_bundle(sc: scenario.Scenario, kubernetes: str, os_name: str) -> str:
    """A bundle with the admin kit only (no upstream needed): enough for upgrade's checks."""
    out = sc.work / f"kit-only-{kubernetes}-{os_name}"
    subprocess.run([sys.executable, "-m", "kubeferry.cli", "bundle", "build", "--k8s", kubernetes,
                    "--os", os_name, "--include", "kubeferry", "--cache-dir", str(scenario.BUNDLE_CACHE),
                    "--output", str(out), "--quiet"], check=True, timeout=1800, stdin=subprocess.DEVNULL)
    bundle = next(out.glob("*.tar"))
    return sc.admin.put(bundle, f"{scenario.ADMIN_HOME}/{bundle.name}")


def _refused(sc: scenario.Scenario, bundle: str, words: str) -> None:
    result = sc.upgrade(bundle, "--plan", run_dir="refused")
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.stderr


def _unschedulable(sc: scenario.Scenario, name: str) -> bool:
    return any(node["name"] == name and node.get("unschedulable")
               for node in ClusterRecord(sc.site.cluster_state).nodes())


def _kill_upgrade(run_dir: str) -> list[int]:
    """SIGKILL the admin host's ``kubeferry.pyz upgrade`` of ``run_dir`` (by pid: what this test
    started), as a lost admin host would end it."""
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # the kit's launcher, the interpreter it runs the kit in (pex), the nsenter around them
        if b"upgrade" in argv and f"{scenario.ADMIN_SITE}/{run_dir}".encode() in argv:
            os.kill(int(entry.name), signal.SIGKILL)
            killed.append(int(entry.name))
    return killed


def _upgrade_killed_in_the_worker(sc: scenario.Scenario, bundle: str) -> None:
    """Run the patch upgrade; kill it once the worker is drained (cordoned); it stopped there."""
    run_dir = "upgrade-killed"
    results: list[subprocess.CompletedProcess[str]] = []
    thread = threading.Thread(target=lambda: results.append(sc.upgrade(bundle, "--yes", run_dir=run_dir)))
    thread.start()
    log = sc.admin.path(f"{scenario.ADMIN_SITE}/{run_dir}/node4.log")
    deadline = time.monotonic() + 3000
    while time.monotonic() < deadline and thread.is_alive():
        if log.exists() and "== phase kubelet" in log.read_text() and _unschedulable(sc, "node4"):
            break
        time.sleep(0.5)
    killed = _kill_upgrade(run_dir)
    thread.join(timeout=120)
    assert killed and results and results[0].returncode != 0, results and results[0].stdout[-3000:]
    assert _unschedulable(sc, "node4"), "killed in the middle of the worker: still drained"


def _nodes_through_real_kubectl(sc: scenario.Scenario) -> dict[str, str]:
    config = sc.admin.path(f"{scenario.ADMIN_SITE}/cluster-admin.conf")
    deadline = time.monotonic() + 90
    while True:  # each kubelet reports its Node on its own beat
        result = subprocess.run([str(kubectl_binary("1.26")), "--kubeconfig", str(config), "--cache-dir",
                                 str(sc.work / "kubectl-cache"), "get", "nodes", "-o", "json"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        versions = {n["metadata"]["name"]: n["status"]["nodeInfo"]["kubeletVersion"]
                    for n in json.loads(result.stdout)["items"]}
        if set(versions.values()) == {f"v{MINOR}"} or time.monotonic() > deadline:
            return versions
        time.sleep(3)


def test_ha_upgrade_patch_killed_and_resumed_then_minor(tmp_path: Path) -> None:
    site = scenario.site_up(f"u{os.getpid() % 10000}", 4)
    try:
        sc = scenario.prepare(site, tmp_path, ha=True)
        installed = sc.install()
        assert installed.returncode == 0, installed.stdout[-4000:] + installed.stderr

        _refused(sc, _kit_only_bundle(sc, PATCH, "el8"), "the bundle is for el8 amd64, node1 runs debian 12")
        _refused(sc, _kit_only_bundle(sc, "1.27.0", "debian12"), "the cluster runs 1.25.0, the bundle is"
                 " 1.27.0: kubeadm upgrades one minor release at a time")

        patch = sc.carry_bundle(PATCH)
        plan = sc.upgrade(patch, "--plan", run_dir="plan")
        assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr
        assert f"[control-plane] node1: would kubeadm upgrade apply v{PATCH} --yes" in plan.stdout
        assert "[kubelet] node4: would kubectl drain node4 --ignore-daemonsets" in plan.stdout
        _upgrade_killed_in_the_worker(sc, patch)
        resumed = sc.upgrade(patch, "--yes", run_dir="upgrade-resumed")
        assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr
        assert "kubeadm upgrade apply" not in resumed.stdout, "the control planes finished before the kill"
        assert "[kubelet] node4: changed" in resumed.stdout and not _unschedulable(sc, "node4")
        assert ClusterRecord(sc.site.cluster_state).init_config()["kubernetesVersion"] == f"v{PATCH}"

        _refused(sc, sc.admin_bundle, f"the bundle is Kubernetes 1.25.0, older than the cluster's {PATCH}")

        minor = sc.carry_bundle(MINOR)
        upgraded = sc.upgrade(minor, "--yes", run_dir="upgrade-minor")
        assert upgraded.returncode == 0, upgraded.stdout[-4000:] + upgraded.stderr
        assert f"control planes at v{MINOR}" in upgraded.stdout
        again = sc.upgrade(minor, "--yes", run_dir="upgrade-again")
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr
        assert ": changed" not in again.stdout
        assert _nodes_through_real_kubectl(sc) == {name: f"v{MINOR}" for name in
                                                   ("node1", "node2", "node3", "node4")}
        for node in sc.site.nodes:  # still held against upgrades (apt-get install unholds what it moves)
            held = node.ssh("apt-mark showhold").stdout.split()
            assert held == ["kubeadm", "kubectl", "kubelet"], (node.name, held)
            sandbox = node.ssh("grep sandbox_image /etc/containerd/config.toml").stdout
            assert '/pause:3.9"' in sandbox, (node.name, sandbox)  # 1.26's pause, not 1.25's 3.8
        counts = site.airgap_counts()
        assert sum(counts.values()) == 0, (counts, site.airgap_destinations())
    finally:
        site.down()
