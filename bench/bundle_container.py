"""Benchmark: which container and compression for the bundle file.

Real layers are gzip'd tars of binaries and libraries. This makes ~150 MB of such
layers from this machine's own /usr (gzip -6, as registries serve them), packs them as a
bundle would (one uncompressed tar), and measures what a second compression pass over
the whole file (gzip -6, zstd -3, zstd -19 --long) gains and costs, plus reading back.

Run: `.venv/bin/python bench/bundle_container.py`
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from kubeferry.console import human_bytes

SOURCES = ["/usr/lib/x86_64-linux-gnu", "/usr/bin", "/usr/share/perl", "/usr/lib/python3"]
LAYER_BUDGET = 150_000_000


def make_layers(work: Path) -> list[Path]:
    """gzip -6 tar layers of real files, ~LAYER_BUDGET bytes compressed in all."""
    layers, total = [], 0
    for index, source in enumerate(SOURCES):
        if total >= LAYER_BUDGET or not Path(source).exists():
            continue
        layer = work / f"layer{index}.tar.gz"
        subprocess.run(["tar", "czf", str(layer), "--ignore-failed-read", "-C", "/", source[1:]],
                       check=False, stderr=subprocess.DEVNULL, timeout=1800)
        layers.append(layer)
        total += layer.stat().st_size
    return layers


def timed(command: str) -> float:
    started = time.monotonic()
    subprocess.run(command, shell=True, check=True, timeout=3600)
    return time.monotonic() - started


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="kubeferry-bench-container-"))
    try:
        layers = make_layers(work)
        bundle = work / "bundle.tar"
        started = time.monotonic()
        with tarfile.open(bundle, "w", format=tarfile.PAX_FORMAT) as tar:
            for layer in layers:
                tar.add(layer, arcname=f"images/blobs/sha256/{layer.name}")
        plain_seconds = time.monotonic() - started
        plain = bundle.stat().st_size
        print(f"layers (gzip -6 of real files): {human_bytes(sum(p.stat().st_size for p in layers))}")
        print(f"{'container':<24}{'size':>12}{'vs plain':>10}{'write s':>10}{'read s':>9}")
        print(f"{'tar (chosen)':<24}{human_bytes(plain):>12}{1.0:>10.4f}{plain_seconds:>10.1f}"
              f"{timed(f'cat {bundle} > /dev/null'):>9.1f}")
        for name, compress, decompress in (
            ("tar + gzip -6", "gzip -6 -c {src} > {dst}", "gzip -dc {dst} > /dev/null"),
            ("tar + zstd -3", "zstd -q -3 -T0 -c {src} > {dst}", "zstd -q -dc {dst} > /dev/null"),
            ("tar + zstd -19 --long", "zstd -q -19 --long -T0 -c {src} > {dst}",
             "zstd -q -dc --long {dst} > /dev/null"),
        ):
            target = work / "bundle.tar.z"
            write = timed(compress.format(src=bundle, dst=target))
            read = timed(decompress.format(dst=target))
            size = target.stat().st_size
            print(f"{name:<24}{human_bytes(size):>12}{size / plain:>10.4f}{plain_seconds + write:>10.1f}"
                  f"{read:>9.1f}")
            target.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
