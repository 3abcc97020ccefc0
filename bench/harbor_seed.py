"""Benchmark: Harbor seed, re-seed and pull under 0/50/200 ms round trips, skopeo in the same run.

A bundle of the realistic stand-in set of 1.25.0 (lab/upstream.yaml, ~413 MB) is built
once. For each round trip a fresh Harbor stand-in (lab/harbor.py: HTTPS front, token
service, a real distribution registry) sits behind bench/latency_proxy.py, which adds the
round trip to every connection and keeps the bandwidth; the token realm and upload
locations name the proxy, so every request pays it. Measured, each against its own fresh
Harbor:

- **seed**: baseline `skopeo copy oci:<layout>:<name> docker://<harbor>/<name>` for every
  name seeding pushes, one after another, from the bundle's OCI layout extracted to a
  directory (the project created first, untimed); kubeferry: `harbor seed`'s API
  (`installer.harbor_seed.seed`), which reads the bundle in place and creates the project;
- **re-seed**: kubeferry's seed again (nothing to send);
- **pull**: every name back out of Harbor into an empty store: baseline `skopeo copy
  docker://... oci:<dir>:<name>` one after another; kubeferry: the build's pull
  (`bundler.images.pull_images`) into an empty cache.

Harbor and the proxy run in processes of their own, as a remote Harbor would. Requests are
counted by the Harbor stand-in (it answers every one, tokens included).
Run as root: `.venv/bin/python bench/harbor_seed.py [--rtt-ms 0,50,200]`.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import requests

from kubeferry.bundle.reader import Bundle
from kubeferry.bundler.build import BuildRequest, build
from kubeferry.bundler.images import pull_images
from kubeferry.installer.harbor_names import harbor_references
from kubeferry.installer.harbor_seed import seed
from kubeferry.installer.inventory import RegistrySettings
from kubeferry.lab.harbor import HarborStandIn
from kubeferry.lab.registry import Registry, free_port, write_docker_config
from kubeferry.lab.upstream import mirrors, seed_upstream
from kubeferry.oci.client import RegistryClient
from kubeferry.oci.store import BlobStore

sys.path.insert(0, str(Path(__file__).parent))
from latency_proxy import ProxyProcess  # noqa: E402

KUBERNETES = "1.25.0"
PROJECT = "google_containers"


def timed(work: Callable[[], object]) -> float:
    started = time.monotonic()
    work()
    return time.monotonic() - started


class BehindProxy:
    """A fresh Harbor stand-in in its own process, reached through a delaying proxy in
    another (its public port): the client measured has this process to itself."""

    def __init__(self, workdir: Path, rtt: float) -> None:
        self.harbor = HarborStandIn(workdir, public_port=free_port("127.0.0.1"))
        self.rtt = rtt
        self.process: subprocess.Popen[bytes] | None = None
        self.proxy: ProxyProcess | None = None

    def __enter__(self) -> BehindProxy:
        config = self.harbor.write_config()
        with open(self.harbor.log_file, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kubeferry.lab.harbor", "serve", "--config", str(config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.proxy = ProxyProcess(self.harbor.port, self.rtt, port=self.harbor.public_port).__enter__()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with requests.Session() as probe:
                    probe.trust_env = False
                    if probe.get(f"{self.harbor.url}/api/v2.0/ping", verify=self.harbor.ca_file,
                                 timeout=3).status_code == 200:
                        return self
            except requests.RequestException:
                time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"the Harbor stand-in did not answer within 60 s: {self.harbor.log_file}")

    def requests(self) -> int:
        """Requests Harbor answered so far (one line each in its request log)."""
        path = self.harbor.requests_file
        return len(path.read_text().splitlines()) if path.is_file() else 0

    def __exit__(self, *exc: object) -> None:
        if self.proxy is not None:
            self.proxy.__exit__()
            self.proxy = None
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=60)
            self.process = None


def settings(harbor: HarborStandIn) -> RegistrySettings:
    return RegistrySettings(url=harbor.url, project=PROJECT, username=harbor.admin_username,
                            ca_file=harbor.ca_file)


def targets(bundle: Bundle, harbor: HarborStandIn) -> list[tuple[str, str]]:
    """(upstream name in the layout, Harbor name) for every name seeding pushes."""
    return [(image["name"], str(ref)) for image in bundle.images
            for ref in harbor_references(image["name"], settings(harbor))]


def skopeo(*args: str) -> None:
    subprocess.run(["skopeo", *args], check=True, timeout=1800, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL)


def skopeo_seed(bundle: Bundle, layout: Path, remote: BehindProxy, work: Path) -> tuple[float, int]:
    """(seconds, requests) of skopeo copying every name from the layout, one after another."""
    harbor = remote.harbor
    certs = work / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    shutil.copy(harbor.ca_file, certs / "harbor-ca.crt")
    auth = write_docker_config(work / "auth.json", harbor.host, harbor.admin_username,
                               harbor.admin_password)
    with _api(harbor) as api:
        api.create_project(PROJECT, public=True)
    before = remote.requests()
    pairs = targets(bundle, harbor)
    seconds = timed(lambda: [skopeo("copy", "--quiet", "--dest-cert-dir", str(certs),
                                    "--dest-authfile", str(auth), f"oci:{layout}:{name}",
                                    f"docker://{target}") for name, target in pairs])
    return seconds, remote.requests() - before


def kubeferry_seed(bundle: Bundle, harbor: HarborStandIn) -> float:
    return timed(lambda: seed(bundle, settings(harbor), harbor.admin_password))


def _api(harbor: HarborStandIn):  # noqa: ANN202 - the HarborAPI context manager
    from kubeferry.installer.harbor_api import HarborAPI

    return HarborAPI(harbor.url, harbor.admin_username, harbor.admin_password, harbor.ca_file)


def skopeo_pull(bundle: Bundle, harbor: HarborStandIn, work: Path) -> float:
    certs = work / "pull-certs"
    certs.mkdir(parents=True, exist_ok=True)
    shutil.copy(harbor.ca_file, certs / "harbor-ca.crt")
    out = work / "pulled"
    return timed(lambda: [skopeo("copy", "--quiet", "--src-cert-dir", str(certs),
                                 f"docker://{target}", f"oci:{out}:{target}")
                          for _, target in targets(bundle, harbor)])


def kubeferry_pull(bundle: Bundle, harbor: HarborStandIn, work: Path) -> float:
    names = [target for _, target in targets(bundle, harbor)]
    with RegistryClient({harbor.host: harbor.url}, ca_file=harbor.ca_file) as client:
        return timed(lambda: pull_images(names, client, BlobStore(work / "pull-cache"), "amd64"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rtt-ms", default="0,50,200", help="comma-separated round trips to add")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kubeferry-bench-harbor-"))
    try:
        with Registry(work / "registry") as registry:
            print(f"seeding {registry.url} with realistic stand-ins of {KUBERNETES} ...", flush=True)
            seed_upstream(registry.url, KUBERNETES, profile="realistic", platforms=("amd64",))
            built = build(BuildRequest(kubernetes=KUBERNETES, mirrors=mirrors(registry.url),
                                       cache_dir=work / "cache", output_dir=work / "out"))
        shutil.rmtree(work / "cache")
        layout = work / "layout"
        layout.mkdir()
        subprocess.run(["tar", "-xf", str(built.path), "-C", str(layout), "images"], check=True,
                       timeout=600)
        layout = layout / "images"
        bundle = Bundle.open(built.path)
        print(f"{'rtt':>6} | {'seed: skopeo':>12} {'req':>5} {'kubeferry':>10} {'req':>5} {'x':>6}"
              f" | {'re-seed':>8} {'req':>4} | {'pull: skopeo':>12} {'req':>5} {'kubeferry':>10}"
              f" {'req':>5} {'x':>6}", flush=True)
        for rtt in [float(v) for v in options.rtt_ms.split(",")]:
            run = work / f"rtt-{rtt:g}"
            with BehindProxy(run / "harbor-skopeo", rtt) as remote:
                base, base_requests = skopeo_seed(bundle, layout, remote, run)
                before = remote.requests()
                base_pull = skopeo_pull(bundle, remote.harbor, run)
                base_pull_requests = remote.requests() - before
            with BehindProxy(run / "harbor-kubeferry", rtt) as remote:
                ours = kubeferry_seed(bundle, remote.harbor)
                our_requests = remote.requests()
                again = kubeferry_seed(bundle, remote.harbor)
                again_requests = remote.requests() - our_requests
                our_pull = kubeferry_pull(bundle, remote.harbor, run)
                our_pull_requests = remote.requests() - our_requests - again_requests
            print(f"{rtt:>4g}ms | {base:>11.1f}s {base_requests:>5} {ours:>9.1f}s {our_requests:>5}"
                  f" {base / ours:>5.2f}x | {again:>7.2f}s {again_requests:>4} | {base_pull:>11.1f}s"
                  f" {base_pull_requests:>5} {our_pull:>9.1f}s {our_pull_requests:>5}"
                  f" {base_pull / our_pull:>5.2f}x", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
