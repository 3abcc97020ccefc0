"""The main job end to end on the built-in lab: ``scripts/demo`` runs this.

1. The internet side: local stand-ins for registry.k8s.io, docker.io, pkgs.k8s.io and the
   calico manifest (Debian's own archive is real), on loopback.
2. ``kubeferry bundle build --os debian12 --sources lab-sources.yaml``: one bundle file.
3. The air gap: three Debian 12 nodes (systemd, sshd, containerd) in network namespaces
   with no route out, a Harbor stand-in on .2, the kubeadm/kubelet doubles and real kubectl
   (``--os el8``: Rocky 8 nodes, and the bundle built against the EL stand-in upstream).
4. The bundle file is carried onto the site's own admin host (.3, air-gapped too: a stock
   python3, ssh and tar, nothing else), ``kubeferry.pyz`` is extracted from it with tar, and
   ``python3 kubeferry.pyz install --bundle ... --inventory cluster.yaml --yes`` runs there:
   every phase, then the same command again, which finds everything done.
5. The last line: how many packets any lab host tried to send out of the site (every lab
   namespace counts and refuses them, lab/airgap.py); not 0 fails the demo.
Everything started is stopped at the end (``--keep`` leaves the lab up to look around).
"""

from __future__ import annotations

import argparse
import shutil
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
    parser.add_argument("--no-harbor", action="store_true",
                        help="`registry: none`: no Harbor, every image by ctr import only")
    parser.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    parser.add_argument("--name", default="demo", help="the lab site's name (default demo)")
    parser.add_argument("--os", default="debian12", choices=NODE_OSES, dest="os_name",
                        help="the nodes' OS and the bundle's (el8: Rocky 8 nodes, lab/el_root.py)")
    options = parser.parse_args(argv)
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
    for attempt, title in ((1, "python3 kubeferry.pyz install"),
                           (2, "python3 kubeferry.pyz install again: nothing to do")):
        step(f"admin host: {title}")
        result = sc.install(run_dir=f"run{attempt}")
        print(result.stdout)
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
            return result.returncode
    step("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
