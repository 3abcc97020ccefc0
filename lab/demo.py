"""The main job end to end on the built-in lab: ``scripts/demo`` runs this.

1. The internet side: a local registry stands in for registry.k8s.io and docker.io,
   holding every image of the release under its real repository path.
2. ``kubeferry bundle build`` pulls them into one bundle file, keeping the real names.
3. Across the air gap: ``bundle verify``, ``bundle inspect``, then the images go into a
   real containerd with ``ctr -n k8s.io images import`` straight from the bundle.
Everything started is stopped at the end, by pid.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from kubeferry.lab.containerd import Containerd
from kubeferry.lab.registry import Registry
from kubeferry.lab.upstream import mirrors, seed_upstream


def step(title: str) -> None:
    print(f"\n==> {title}", flush=True)


def kubeferry(*args: str, **kwargs) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "kubeferry.cli", *args]
    print("$ kubeferry " + " ".join(args), flush=True)
    return subprocess.run(command, check=True, timeout=1800, **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k8s", default="1.25.0")
    parser.add_argument("--profile", choices=("tiny", "realistic"), default="tiny",
                        help="stand-in image sizes (realistic: ~400 MB)")
    parser.add_argument("--keep", type=Path, help="copy the bundle here at the end")
    options = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="kubeferry-demo-"))
    try:
        with Registry(work / "upstream") as upstream:
            step(f"internet side: stand-in registry.k8s.io and docker.io at {upstream.url}")
            seed_upstream(upstream.url, options.k8s, profile=options.profile)
            step("bundle build")
            flags = [f for m in mirrors(upstream.url) for f in ("--mirror", m)]
            kubeferry("bundle", "build", "--k8s", options.k8s, "--include", "images", *flags,
                      "--cache-dir", str(work / "cache"), "--output", str(work / "bundles"))
        bundle = next((work / "bundles").glob("*.tar"))
        step("air-gap side (the upstream registry is gone): verify and inspect the bundle")
        kubeferry("bundle", "verify", str(bundle))
        kubeferry("bundle", "inspect", str(bundle))
        step("ctr -n k8s.io images import, streamed from the bundle")
        with Containerd() as containerd:
            producer = subprocess.Popen([sys.executable, "-m", "kubeferry.cli", "bundle", "images",
                                         str(bundle), "-o", "-"], stdout=subprocess.PIPE)
            subprocess.run(["ctr", "--address", str(containerd.socket), "-n", "k8s.io", "images",
                            "import", "-"], stdin=producer.stdout, check=True, timeout=1800)
            if producer.wait(timeout=600) != 0:
                raise SystemExit("bundle images failed")
            print(containerd.ctr("images", "ls").stdout)
        if options.keep:
            shutil.copy2(bundle, options.keep)
            print(f"bundle kept at {options.keep}")
        step("done")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
