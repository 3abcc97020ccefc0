"""Benchmark: `kubeferry bundle build` against the way kubespray-offline and kubeasz do it.

Both read the same local registry holding stand-in images of Kubernetes 1.25.0 with
realistic compressed sizes (lab/upstream.yaml, ~413 MB, base layers shared as upstream
shares them), in the same run:

- baseline: `skopeo copy docker://... docker-archive:<image>.tar` for each image, one
  after another, then `tar cf` of the archives (the runbooks' k8s_1.25.0.tar);
- kubeferry cold: `bundle build` with an empty cache;
- kubeferry warm: the same build again (the cache holds everything).

Prints wall times, the cold speed-up, bytes and the size ratio against the unique
compressed blob bytes. `--rtt-ms 0,50,200` puts the registry behind a delaying proxy
(bench/latency_proxy.py: that round trip added to every connection, bandwidth kept) and
runs baseline and cold build at each, with the number of requests each made (the proxy
runs in its own process, as a remote registry would).
Run as root: `.venv/bin/python bench/bundle_build.py [--rtt-ms 0,50,200]`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kubeferry.bundle.reader import Bundle
from kubeferry.bundler.build import BuildRequest, build
from kubeferry.console import human_bytes
from kubeferry.lab.registry import Registry
from kubeferry.lab.upstream import mirrors, seed_upstream
from kubeferry.oci.reference import ImageReference
from kubeferry.versions import image_set

KUBERNETES = "1.25.0"


def baseline(registry: Registry, work: Path, host: str | None = None) -> tuple[float, int]:
    """skopeo copy each image to a docker-archive, sequentially, then tar them up."""
    archives = work / "archives"
    archives.mkdir(parents=True)
    started = time.monotonic()
    for name in image_set(KUBERNETES).images:
        ref = ImageReference.parse(name)
        target = archives / (ref.repository.replace("/", "_") + ".tar")
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--src-tls-verify=false",
             f"docker://{host or registry.host}/{ref.repository}:{ref.tag}",
             f"docker-archive:{target}:{name}"],
            check=True, timeout=1800, stdin=subprocess.DEVNULL)
    bundle = work / f"k8s_{KUBERNETES}.tar"
    subprocess.run(["tar", "cf", str(bundle), "-C", str(archives), "."], check=True, timeout=1800)
    return time.monotonic() - started, bundle.stat().st_size


def at_latency(registry: Registry, work: Path, rtts: list[float]) -> None:
    """Baseline and cold build through the delaying proxy at each round trip."""
    sys.path.insert(0, str(Path(__file__).parent))
    from latency_proxy import ProxyProcess

    port = int(registry.url.rsplit(':', 1)[1])
    print(f"{'rtt':>6} {'baseline':>9} {'requests':>9} {'kubeferry':>10} {'requests':>9} {'speed-up':>9}"
          f" {'write tail':>11}")
    for rtt in rtts:
        with ProxyProcess(port, rtt) as proxy:
            base_seconds, _ = baseline(registry, work / f"baseline-{rtt:g}", host=proxy.host)
        base_requests = proxy.requests
        os.sync()  # the baseline's archives reach the disk before the build is timed, not during it
        last_byte = LastByte()
        with ProxyProcess(port, rtt) as proxy:
            cold = build(BuildRequest(kubernetes=KUBERNETES, mirrors=mirrors(proxy.url),
                                      cache_dir=work / f"cache-{rtt:g}", output_dir=work / f"out-{rtt:g}"),
                         progress=last_byte)
            tail = time.monotonic() - last_byte.at
        print(f"{rtt:>4g}ms {base_seconds:>8.1f}s {base_requests:>9} {cold.seconds:>9.1f}s"
              f" {proxy.requests:>9} {base_seconds / cold.seconds:>8.2f}x {tail:>10.2f}s", flush=True)


class LastByte:
    """A build's progress callback noting when the last downloaded byte arrived: what the
    build does after it (finishing the bundle file) is its write tail."""

    def __init__(self) -> None:
        self.at = time.monotonic()

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase != "write" and done:
            self.at = time.monotonic()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rtt-ms", help="comma-separated round trips to add, e.g. 0,50,200")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kubeferry-bench-"))
    try:
        with Registry(work / "registry") as registry:
            print(f"seeding {registry.url} with realistic stand-ins of {KUBERNETES} ...", flush=True)
            seed_upstream(registry.url, KUBERNETES, profile="realistic", platforms=("amd64",))
            if options.rtt_ms:
                at_latency(registry, work, [float(v) for v in options.rtt_ms.split(",")])
                return
            request = BuildRequest(kubernetes=KUBERNETES, mirrors=mirrors(registry.url),
                                   cache_dir=work / "cache", output_dir=work / "out")
            base_seconds, base_size = baseline(registry, work / "baseline")
            cold = build(request)
            warm = build(request)
        unique = sum(m["size"] for m in Bundle.open(cold.path).members
                     if m["path"].startswith("images/blobs/"))
        print(f"baseline (skopeo docker-archive x10, then tar): {base_seconds:6.1f} s "
              f"{human_bytes(base_size)}")
        print(f"kubeferry cold:                                {cold.seconds:6.1f} s "
              f"{human_bytes(cold.size)} downloaded {human_bytes(cold.downloaded)}")
        print(f"kubeferry warm:                                {warm.seconds:6.1f} s "
              f"downloaded {human_bytes(warm.downloaded)}")
        print(f"cold speed-up vs baseline:   {base_seconds / cold.seconds:.2f}x (target >= 2x)")
        print(f"bundle / unique blob bytes:  {cold.size / unique:.4f} (target <= 1.05)")
        print(f"baseline / bundle size:      {base_size / cold.size:.2f}x")
        print(f"warm rebuild downloaded:     {warm.downloaded} bytes (target 0)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
