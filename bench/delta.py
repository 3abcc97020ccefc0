"""Benchmark: delta bundles against full bundles for patch and minor upgrades.

Builds debian12 bundles of 1.25.0, 1.25.1 and 1.26.0 (the admin kit, images and packages:
everything a site gets but calico.yaml, ~0.2 MB, left out because the lab keeps a reference
copy of v3.24.5's manifest only, not of 1.26's v3.26.5) against the lab's stand-in upstream with the realistic
image profile (lab/upstream.yaml: upstream's compressed layer sizes, base layers shared as
upstream shares them, a release's own layers new in each release), the stand-in
pkgs.k8s.io (kubeadm, kubelet, kubectl, cri-tools, kubernetes-cni per release) and real
Debian 12 packages from deb.debian.org (through the lab's bundle cache, hard-linked into a
private copy). Each later bundle is built with ``--delta-from`` the earlier one, and the
delta is patched back and compared byte for byte. Prints, per pair: the full bundle, the
delta, their ratio, members carried, and patch time.

Run as root: ``.venv/bin/python bench/delta.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import yaml

from kubeferry.bundle.reader import Bundle
from kubeferry.console import human_bytes
from kubeferry.lab.registry import Registry
from kubeferry.lab.scenario import BUNDLE_CACHE
from kubeferry.lab.static_http import StaticServer
from kubeferry.lab.upstream import seed_upstream
from kubeferry.lab.upstream_packages import lab_sources, make_tree

RELEASES = ("1.25.0", "1.25.1", "1.26.0")
PAIRS = (("1.25.0", "1.25.1"), ("1.25.1", "1.26.0"), ("1.25.0", "1.26.0"))
KUBEFERRY = [sys.executable, "-m", "kubeferry.cli"]
INCLUDE = "kubeferry,images,packages"


def private_cache(work: Path) -> Path:
    """The lab's bundle cache hard-linked: no download, and this run writes only its own files
    (blobs are published by rename, never rewritten in place)."""
    cache = work / "cache"
    if BUNDLE_CACHE.is_dir():
        subprocess.run(["cp", "-al", str(BUNDLE_CACHE), str(cache)], check=True, timeout=600)
        for scratch in ("locks", "partial"):
            shutil.rmtree(cache / scratch, ignore_errors=True)
    return cache


def build(release: str, sources: Path, cache: Path, output: Path, *extra: str) -> list[Path]:
    result = subprocess.run([*KUBEFERRY, "bundle", "build", "--k8s", release, "--os", "debian12",
                             "--sources", str(sources), "--cache-dir", str(cache),
                             "--output", str(output), "--include", INCLUDE, "--quiet", *extra],
                            capture_output=True, text=True, timeout=3600, stdin=subprocess.DEVNULL,
                            env={**os.environ, "SOURCE_DATE_EPOCH": "1764806400"})
    if result.returncode != 0:
        raise SystemExit(f"bundle build {release} failed: {result.stderr.strip()}")
    return [Path(line) for line in result.stdout.split()]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="kubeferry-bench-delta-"))
    try:
        cache = private_cache(work)
        tree = make_tree(work / "www", RELEASES, families=("deb",), files=False)
        with Registry(work / "registry") as registry, StaticServer(tree) as server:
            print(f"seeding {', '.join(RELEASES)} (realistic profile) into {registry.url}", flush=True)
            for release in RELEASES:
                seed_upstream(registry.url, release, profile="realistic")
            bundles: dict[str, Path] = {}
            for release in RELEASES:
                sources = work / f"sources-{release}.yaml"
                data = lab_sources(release, "debian12", server.url, registry.url)
                data.pop("files", None)  # not built (see above)
                sources.write_text(yaml.safe_dump(data))
                started = time.monotonic()
                (bundles[release],) = build(release, sources, cache, work / f"full-{release}")
                print(f"built {bundles[release].name}: {human_bytes(bundles[release].stat().st_size)}"
                      f" in {time.monotonic() - started:.0f} s", flush=True)
            print(f"\n{'pair':<17} {'full':>10} {'delta':>10} {'ratio':>7} {'members carried':>16}"
                  f" {'patch':>7}")
            for old, new in PAIRS:
                sources = work / f"sources-{new}.yaml"
                rebuilt, delta = build(new, sources, cache, work / f"delta-{old}-{new}",
                                       "--delta-from", str(bundles[old]))
                assert rebuilt.read_bytes() == bundles[new].read_bytes(), "builds not reproducible"
                started = time.monotonic()
                patched = work / f"patched-{old}-{new}"
                subprocess.run([*KUBEFERRY, "bundle", "patch", str(bundles[old]), str(delta),
                                "--output", str(patched)], check=True, timeout=3600,
                               stdout=subprocess.DEVNULL)
                seconds = time.monotonic() - started
                same = (patched / bundles[new].name).read_bytes() == bundles[new].read_bytes()
                assert same, "patch did not rebuild the bundle byte for byte"
                full, size = bundles[new].stat().st_size, delta.stat().st_size
                members = len(Bundle.open(bundles[new]).members)
                carried = _carried(delta)
                print(f"{old + ' -> ' + new:<17} {human_bytes(full):>10} {human_bytes(size):>10}"
                      f" {size / full:>6.1%} {f'{carried} of {members}':>16} {seconds:>6.1f}s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _carried(delta: Path) -> int:
    with tarfile.open(delta) as tar:
        return len(tar.getmembers()) - 2  # the header and the metadata


if __name__ == "__main__":
    main()
