"""The main job end to end on the built-in lab: ``scripts/demo`` runs this.

1. The internet side: local stand-ins for registry.k8s.io, docker.io, pkgs.k8s.io and the
   calico manifest (Debian's own archive is real), on loopback.
2. ``kubeferry bundle build --os debian12 --sources lab-sources.yaml``: one bundle file.
3. The air gap: three Debian 12 nodes (systemd, sshd, containerd) in network namespaces
   with no route out, a Harbor stand-in on .2, the kubeadm/kubelet doubles and real kubectl
   (``--os el8``: Rocky 8 nodes, ``--os el7``: CentOS 7.9 nodes, and the bundle built
   against the EL stand-in upstream).
4. The bundle file is carried onto the site's own admin host (.3, air-gapped too: a stock
   python3, ssh and tar, nothing else), ``kubeferry.pyz`` is extracted from it with tar, and
   ``python3 kubeferry.pyz install --bundle ... --inventory cluster.yaml --yes`` runs there:
   every phase, then the same command again, which finds everything done.
   ``--upgrade``: an HA site; the worker removed (``remove-node``) and joined again
   (``install``), then ``upgrade`` to each release of ``--upgrade-to`` with its own bundle.
5. The last line: how many packets any lab host tried to send out of the site (every lab
   namespace counts and refuses them, lab/airgap.py); not 0 fails the demo.
Everything started is stopped at the end (``--keep`` leaves the lab up to look around).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from kubeferry.errors import KubeferryError
from kubeferry.lab import airgap, scenario
from kubeferry.lab.site import NODE_OSES, Site


def step(title: str) -> None:
    print(f"\n==> {title}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k8s", default="1.25.0")
    parser.add_argument("--ha", action="store_true", help="3 control planes + VIP + 1 worker")
    parser.add_argument("--upgrade", action="store_true",
                        help="HA, installed at --k8s, then `kubeferry upgrade` to each of --upgrade-to")
    parser.add_argument("--upgrade-to", default="1.25.4,1.26.4",
                        help="the releases --upgrade goes through, in order (default 1.25.4,1.26.4)")
    parser.add_argument("--no-harbor", action="store_true",
                        help="`registry: none`: no Harbor, every image by ctr import only")
    parser.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    parser.add_argument("--name", default="demo", help="the lab site's name (default demo)")
    parser.add_argument("--os", default="debian12", choices=NODE_OSES, dest="os_name",
                        help="the nodes' OS and the bundle's (el8: Rocky 8 nodes, el7: CentOS 7.9 "
                        "nodes rebooted into kernel-ml; lab/el_root.py)")
    options = parser.parse_args(argv)
    options.ha = options.ha or options.upgrade
    try:
        step("air-gap lab: nodes in network namespaces, no route out")
        site = scenario.site_up(options.name, 4 if options.ha else 3, log=print,
                                os_name=options.os_name)
    except KubeferryError as error:
        print(f"demo: {error}", file=sys.stderr)
        return error.exit_code
    work = Path(tempfile.mkdtemp(prefix="kubeferry-demo-"))
    try:
        code = _run(site, work, options)
        counts = site.airgap_counts()
        tried = site.airgap_destinations()
    except KubeferryError as error:
        print(f"demo: {error}", file=sys.stderr)
        return error.exit_code
    except subprocess.CalledProcessError as error:  # the build said why, on its stderr
        print(f"demo: kubeferry {' '.join(error.cmd[3:5])} failed (exit {error.returncode}),"
              " its message above", file=sys.stderr)
        return 1
    finally:
        if options.keep:
            print(f"lab left up: kubeferry-lab status --name {options.name}; work dir {work}")
        else:
            site.down()
            shutil.rmtree(work, ignore_errors=True)
    print(airgap.summary(counts, tried), flush=True)
    return code or (1 if sum(counts.values()) else 0)


def _run(site: Site, work: Path, options: argparse.Namespace) -> int:
    """Build on the internet side, install twice from the air-gapped admin host."""
    step("internet side: stand-in upstream; kubeferry bundle build"
         + ("" if options.no_harbor else "; Harbor stand-in on .2"))
    sc = scenario.prepare(site, work, options.k8s, ha=options.ha, log=print,
                          harbor=not options.no_harbor)
    print(f"bundle: {sc.bundle}\ninventory on the admin host: {sc.admin_inventory}")
    step(f"admin host {sc.admin.address} (air-gapped): tar -xf {sc.bundle.name} "
         f"--occurrence {scenario.KIT}")
    print(f"{sc.kit()} ({sc.admin.run(['python3', '--version']).stdout.strip()}, no venv, no pip)")
    runs = ((1, "python3 kubeferry.pyz install"), (2, "python3 kubeferry.pyz install again: nothing to do"))
    for attempt, title in runs[:1] if options.upgrade else runs:
        step(f"admin host: {title}")
        result = sc.install(run_dir=f"run{attempt}")
        print(result.stdout)
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
            return result.returncode
    if options.upgrade:
        code = (_worker_removed_and_added(sc, site.nodes[-1].name)
                or _upgrades(sc, [v.strip() for v in options.upgrade_to.split(",") if v.strip()]))
        if code:
            return code
    step("the nodes now (read over SSH)")
    for line in node_state(site):
        print(line)
    step("done")
    return 0


def _admin_step(sc: scenario.Scenario, title: str, command: str, *args: str, run_dir: str) -> int:
    step(f"admin host: {title}")
    result = sc.kubeferry(command, *args, run_dir=run_dir)
    print(result.stdout)
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
    return result.returncode


def _worker_removed_and_added(sc: scenario.Scenario, worker: str) -> int:
    """Day 2 membership: ``remove-node`` drains, resets and deletes the worker and updates the
    others; the next ``install`` (the worker still in the inventory) joins it again."""
    return (_admin_step(sc, f"python3 kubeferry.pyz remove-node {worker}", "remove-node", worker, "--yes",
                        run_dir="remove-node")
            or _admin_step(sc, f"python3 kubeferry.pyz install: {worker} joins again", "install",
                           "--bundle", sc.admin_bundle, "--yes", run_dir="rejoin"))


def _upgrades(sc: scenario.Scenario, releases: list[str]) -> int:
    """Each release in turn: its bundle built and carried in, ``upgrade --plan``, ``upgrade``;
    the last one run again (nothing to change); every node's version at the end."""
    for release in releases:
        step(f"internet side: the bundle of {release}, carried onto the admin host")
        bundle = sc.carry_bundle(release, log=print)
        for args, title in ((("--plan",), "plan"), (("--yes",), "run")):
            step(f"admin host: python3 kubeferry.pyz upgrade --bundle {bundle.rsplit('/', 1)[-1]} {args[0]}"
                 f" ({title})")
            result = sc.upgrade(bundle, *args, run_dir=f"upgrade-{release}-{title}")
            print(result.stdout)
            if result.returncode != 0:
                print(result.stderr, file=sys.stderr)
                return result.returncode
    step("admin host: the last upgrade again: nothing to change")
    again = sc.upgrade(bundle, "--yes", run_dir="upgrade-again")
    print(again.stdout)
    if again.returncode != 0:
        print(again.stderr, file=sys.stderr)
        return again.returncode
    step("every node's version (kubectl get nodes on node1)")
    nodes = sc.site.nodes[0].ssh("kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes -o wide")
    print(nodes.stdout.rstrip())
    return 0 if nodes.ok else 1


# What the install left on an EL node, in one line: firewalld, SELinux (config and runtime),
# the Kubernetes packages, their repository's gpgcheck and their version locks, the kernel.
_EL_STATE = r"""
echo "firewalld $(systemctl is-active firewalld)/$(systemctl is-enabled firewalld 2>/dev/null);" \
  "SELinux $(sed -n 's/^SELINUX=//p' /etc/selinux/config) in config, $(getenforce) at runtime;" \
  "$(rpm -q kubeadm kubelet kubectl | tr '\n' ' ')" \
  "from kubeferry.repo ($(grep '^gpgcheck' /etc/yum.repos.d/kubeferry.repo))," \
  "locked: $(yum -q --disablerepo='*' versionlock list 2>/dev/null | tr '\n' ' ')" \
  "kernel $(uname -r) (grub default $(grubby --default-kernel 2>/dev/null || echo -))"
"""
_DEB_STATE = r"""
echo "$(dpkg-query -W -f '${Package} ${Version}, ' kubeadm kubelet kubectl)" \
  "held: $(apt-mark showhold | tr '\n' ' ') kernel $(uname -r)"
"""


def node_state(site: Site) -> list[str]:
    """One line per node saying what the install left there (the demo's last evidence)."""
    script = _DEB_STATE if site.os == "debian12" else _EL_STATE
    return [f"{node.name}: {node.ssh(script, check=False).stdout.strip()}" for node in site.nodes]


if __name__ == "__main__":
    sys.exit(main())
