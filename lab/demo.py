"""The main job end to end on the built-in lab: ``scripts/demo`` runs this.

1. The internet side: local stand-ins for registry.k8s.io, docker.io, pkgs.k8s.io and the
   calico manifest (Debian's own archive is real), on loopback.
2. ``kubeferry bundle build --os debian12 --sources lab-sources.yaml``: one bundle file.
3. The air gap: three Debian 12 nodes (systemd, sshd, containerd) in network namespaces
   with no route out, a Harbor stand-in on .2, and the kubeadm/kubectl doubles.
4. ``kubeferry install --bundle ... --inventory cluster.yaml --yes``: every phase, then the
   same command again, which finds everything done.
Everything started is stopped at the end (``--keep`` leaves the lab up to look around).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from kubeferry.lab import scenario


def step(title: str) -> None:
    print(f"\n==> {title}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k8s", default="1.25.0")
    parser.add_argument("--ha", action="store_true", help="3 control planes + VIP + 1 worker")
    parser.add_argument("--no-harbor", action="store_true",
                        help="`registry: none`: no Harbor, every image by ctr import only")
    parser.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    options = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="kubeferry-demo-"))
    step("air-gap lab: nodes in network namespaces, no route out")
    site = scenario.site_up("demo", 4 if options.ha else 3, log=print)
    try:
        step("internet side: stand-in upstream; kubeferry bundle build"
             + ("" if options.no_harbor else "; Harbor stand-in on .2"))
        sc = scenario.prepare(site, work, options.k8s, ha=options.ha, log=print,
                              harbor=not options.no_harbor)
        print(f"bundle: {sc.bundle}\ninventory: {sc.inventory}")
        for attempt, title in ((1, "kubeferry install"), (2, "kubeferry install again: nothing to do")):
            step(title)
            result = sc.install(run_dir=f"run{attempt}")
            print(result.stdout)
            if result.returncode != 0:
                print(result.stderr, file=sys.stderr)
                return result.returncode
        step("done")
        return 0
    finally:
        if options.keep:
            print(f"lab left up: kubeferry-lab status --name demo; work dir {work}")
        else:
            site.down()
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
