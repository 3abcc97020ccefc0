"""Benchmark: dependency resolution time and bytes bundled for the full package sets.

- debian12: Debian's REAL bookworm, bookworm-updates and bookworm-security metadata from
  deb.debian.org (cached under --cache), plus a stand-in pkgs.k8s.io flat repository
  (dpkg-deb, on loopback) for the five Kubernetes packages, whose Depends are real.
- el8: Rocky 8 metadata is not reachable from here, so a SYNTHETIC pair of repositories
  the size of Rocky 8's (1,700 BaseOS + 5,600 AppStream packages, sonames, file provides,
  modules) written as primary.xml.gz and read by the same parser.

For each: metadata parse time, installed-set (base) time, resolution time of the OS's
full package set (median of runs), and the bytes the closure bundles relative to the
base set, against the seed runbooks' approach (`yum install --downloadonly` / `apt-get
download` of the closure on an empty node: every dependency, the base set included).

Run: `.venv/bin/python bench/packages_resolve.py [--write docs/benchmarks.md]`
"""

from __future__ import annotations

import argparse
import gzip
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubeferry.bundler.fetch import Fetcher  # noqa: E402
from kubeferry.bundler.packages import installed_set, kubernetes_pins, load_repositories, universe_of  # noqa: E402
from kubeferry.bundler.repositories import LoadedRepo, RepoSpec, os_spec  # noqa: E402
from kubeferry.bundler.resolver import Resolver  # noqa: E402
from kubeferry.bundler.rpmmd import parse_primary  # noqa: E402
from kubeferry.bundler.sources import Sources  # noqa: E402
from kubeferry.console import human_bytes  # noqa: E402

RUNS = 5


def _median_seconds(function, runs: int = RUNS):
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def _measure(name: str, spec, repos, kubernetes: str, parse_seconds: float) -> dict:
    universe = universe_of(spec, repos)
    base_seconds, (installed, warnings) = _median_seconds(
        lambda: installed_set(spec, universe, repos), runs=3)
    def resolve():
        return Resolver(universe, installed=installed,
                        pins=kubernetes_pins(spec, kubernetes)).resolve(spec.packages)

    cold_seconds, _ = _median_seconds(resolve, runs=1)  # parses the Depends it looks at
    resolve_seconds, ours = _median_seconds(resolve)
    _, empty = _median_seconds(
        lambda: Resolver(universe, pins=kubernetes_pins(spec, kubernetes)).resolve(spec.packages), runs=1)
    return {
        "name": name, "packages": len(universe.packages), "parse": parse_seconds,
        "base": base_seconds, "installed": len(installed), "resolve": resolve_seconds,
        "cold": cold_seconds,
        "ours_count": len(ours.packages), "ours_bytes": sum(p.size for p in ours.packages),
        "empty_count": len(empty.packages), "empty_bytes": sum(p.size for p in empty.packages),
        "warnings": len(warnings),
    }


# ---- debian12: real archive + stand-in Kubernetes repository ----------------------------
def debian12(cache: Path, work: Path) -> dict:
    from kubeferry.lab.static_http import StaticServer
    from kubeferry.lab.upstream_packages import flat_apt_repo
    from tests.packages.standin_deb import build_kubernetes_debs

    repo = work / "kubernetes"
    debs = build_kubernetes_debs(repo / "amd64")
    flat_apt_repo(repo, debs, key=None)
    spec = os_spec("debian12")
    with StaticServer(work) as server:
        sources = Sources(repositories={
            "debian": "http://deb.debian.org/debian",
            "debian-security": "http://deb.debian.org/debian-security",
            "kubernetes": f"{server.url}/kubernetes"})
        specs = [RepoSpec(r.name, r.source, r.base, (), r.arches, r.suite, r.components, r.flat)
                 for r in spec.repositories_for("amd64")]  # keys: checked by the tests
        fetcher = Fetcher(cache)
        load_repositories(specs, spec, "amd64", sources, fetcher, {})  # warm the cache
        parse_seconds, repos = _median_seconds(
            lambda: load_repositories(specs, spec, "amd64", sources, fetcher, {}), runs=3)
    return _measure("debian12 (real bookworm metadata)", spec, repos, "1.25.0", parse_seconds)


# ---- el8: synthetic repositories of Rocky 8's size -----------------------------------------
def _entry(name: str, version: str, size: int, provides: list[str], requires: list[str],
           files: list[str], arch: str = "x86_64") -> str:
    prov = "".join(f'<rpm:entry name="{p}"/>' for p in provides)
    req = "".join(f'<rpm:entry name="{r}"/>' for r in requires)
    fil = "".join(f"<file>{f}</file>" for f in files)
    digest = f"{abs(hash((name, version))):064x}"[-64:]
    return (f'<package type="rpm"><name>{name}</name><arch>{arch}</arch>'
            f'<version epoch="0" ver="{version}" rel="1.el8"/>'
            f'<checksum type="sha256" pkgid="YES">{digest}</checksum>'
            f'<size package="{size}" installed="{size * 3}" archive="{size * 3}"/>'
            f'<location href="Packages/{name}-{version}-1.el8.{arch}.rpm"/>'
            f'<format><rpm:provides><rpm:entry name="{name}" flags="EQ" epoch="0" '
            f'ver="{version}" rel="1.el8"/>{prov}</rpm:provides>'
            f"<rpm:requires>{req}</rpm:requires>{fil}</format></package>\n")


def synthetic_el8(work: Path, seed: int = 8) -> dict[str, Path]:
    """Rocky 8 sized repositories: packages require 1-6 sonames, drawn mostly from the
    core libraries early in BaseOS (as real packages mostly need glibc, zlib, openssl...),
    the base names spread through BaseOS so that a minimal install is a few hundred."""
    rng = random.Random(seed)
    spec = os_spec("el8")
    libs: list[str] = []
    repos: dict[str, list[str]] = {"el8-baseos": [], "el8-appstream": [], "docker-ce": [],
                                   "kubernetes": []}

    def size() -> int:
        return int(rng.lognormvariate(11.9, 1.2))  # median ~150 kB, long tail

    def add(repo: str, name: str, extra_requires: tuple[str, ...] = (),
            provides: tuple[str, ...] = (), version: str = "", bytes_: int = 0) -> None:
        soname = f"lib{name}.so.{rng.randint(0, 9)}()(64bit)"
        requires = {libs[int(len(libs) * rng.random() ** 3)]
                    for _ in range(rng.randint(1, 6))} if libs else set()
        files = [f"/usr/bin/{name}"] if rng.random() < 0.4 else []
        version = version or f"{rng.randint(1, 9)}.{rng.randint(0, 30)}"
        repos[repo].append(_entry(name, version, bytes_ or size(), [soname, *provides],
                                  sorted(requires) + list(extra_requires), files))
        libs.append(soname)

    base_names = list(spec.base)
    for index in range(1700 - len(base_names)):
        add("el8-baseos", f"base{index}")
        if index % 35 == 34 and base_names:
            add("el8-baseos", base_names.pop(0))
    for name in base_names:
        add("el8-baseos", name)
    for index in range(5600):
        add("el8-appstream", f"app{index}")
    tools = ("conntrack-tools", "ipvsadm", "ipset", "ethtool", "socat", "tar", "haproxy",
             "keepalived")
    for name in tools:
        add("el8-appstream" if name in ("socat", "haproxy", "keepalived", "ipvsadm")
            else "el8-baseos", name,
            provides=("conntrack",) if name == "conntrack-tools" else ())
    add("el8-baseos", "iptables-ebtables", provides=("ebtables",))
    add("docker-ce", "containerd.io", bytes_=35_000_000)
    add("kubernetes", "kubernetes-cni", version="1.2.0", bytes_=8_000_000)
    add("kubernetes", "cri-tools", version="1.26.0", bytes_=8_000_000)
    add("kubernetes", "kubectl", version="1.25.0", bytes_=10_000_000)
    add("kubernetes", "kubelet", version="1.25.0", bytes_=21_000_000, extra_requires=(
        "conntrack", "ebtables", "ethtool", "socat", "iproute", "util-linux",
        "kubernetes-cni"))
    add("kubernetes", "kubeadm", version="1.25.0", bytes_=10_000_000,
        extra_requires=("kubelet", "kubectl", "cri-tools", "kubernetes-cni"))
    paths = {}
    for repo, entries in repos.items():
        text = ('<?xml version="1.0" encoding="UTF-8"?>\n<metadata xmlns="http://linux.duke.edu/'
                'metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" '
                f'packages="{len(entries)}">\n' + "".join(entries) + "</metadata>\n")
        paths[repo] = work / f"{repo}-primary.xml.gz"
        paths[repo].write_bytes(gzip.compress(text.encode(), mtime=0))
    return paths


def el8(work: Path) -> dict:
    spec = os_spec("el8")
    paths = synthetic_el8(work)

    def parse() -> list[LoadedRepo]:
        return [LoadedRepo(spec=next(r for r in spec.repositories if r.name == name), url="",
                           packages=parse_primary(path, name, ("x86_64", "noarch"), name),
                           format="rpm-md") for name, path in paths.items()]

    parse_seconds, repos = _median_seconds(parse, runs=3)
    return _measure("el8 (synthetic, Rocky 8 sized)", spec, repos, "1.25.0", parse_seconds)


def table(rows: list[dict]) -> str:
    lines = [
        "| OS set | packages in repos | parse metadata | installed set | resolve full set"
        " (first / again) |"
        " bundled (ours, relative to base) | runbook approach (closure on an empty node) |"
        " ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['name']} | {row['packages']:,} | {row['parse']:.2f} s | {row['base']:.2f} s"
            f" ({row['installed']} pkgs) | {row['cold'] * 1000:.0f} ms /"
            f" {row['resolve'] * 1000:.0f} ms |"
            f" {row['ours_count']} pkgs, {human_bytes(row['ours_bytes'])} |"
            f" {row['empty_count']} pkgs, {human_bytes(row['empty_bytes'])} |"
            f" {row['ours_bytes'] / row['empty_bytes']:.2f} |")
    return "\n".join(lines)


SECTION_INTRO = """\
Measured by `bench/packages_resolve.py` on a 2-vCPU machine shared with other jobs (times
are medians of 3-5 runs; between invocations parse times varied by about +-30%).
"Resolve full set" is the closure of the OS's whole package set from
`manifests/packages.yaml` (kubeadm, kubelet, kubectl, cri-tools, kubernetes-cni,
containerd, the node tools, haproxy, keepalived) relative to the installed set; "parse"
reads every repository's metadata (from the cache: no download); "installed set" is the
closure of the base set a minimal node has (for debian12 it equals, package for package,
what `debootstrap --variant=minbase` installs: a test checks it). Bytes are package sizes
from the metadata.
The runbook approach is modelled as the same closure against an empty node, which is
what `yum install --downloadonly --installroot=<empty>` / `apt-get download` of the
dependency tree fetch when run on an internet machine.

- debian12 uses Debian's real bookworm, bookworm-updates and bookworm-security metadata
  (~65,000 amd64+all packages) with stand-in Kubernetes packages whose Depends are
  pkgs.k8s.io's (their sizes are tiny; Debian's packages are real).
- el8 is synthetic: Rocky 8 metadata is not reachable from the benchmark machine, so two
  repositories of Rocky 8's size with random soname dependencies stand in. Its byte
  figures show the method, not Rocky 8's real sizes.
"""


def write_section(path: Path, body: str) -> None:
    """Replace (or append) the "## Packages" section of docs/benchmarks.md."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    heading = "## Packages"
    start = text.find(f"\n{heading}\n")
    section = f"\n{heading}\n\n{body}\n"
    if start < 0:
        text = text.rstrip("\n") + "\n" + section
    else:
        end = text.find("\n## ", start + len(heading) + 2)
        text = text[:start] + section + (text[end:] if end >= 0 else "")
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("/var/cache/kubeferry-test/build-cache"))
    parser.add_argument("--write", type=Path, help="update the Packages section of this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kubeferry-bench-packages-") as tmp:
        work = Path(tmp)
        (work / "deb").mkdir()
        (work / "rpm").mkdir()
        rows = [debian12(args.cache, work / "deb"), el8(work / "rpm")]
    result = table(rows)
    print(result)
    if args.write:
        write_section(args.write, SECTION_INTRO + "\n" + result + "\n")


if __name__ == "__main__":
    main()
