"""Benchmark: `kubeferry bundle verify` against `sha256sum` of the same file, same run.

verify reads every byte once and checks each member's sha256 (and the metadata's); the
baseline is the one-pass sha256 a stock tool makes of the whole file. Both read from the
page cache (the file is read once first), so the figure is the hashing and copying cost.

Run: `.venv/bin/python bench/verify.py [--size-gb 1]`
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

from kubeferry.bundler.content import Member
from kubeferry.bundler.writer import write_bundle

MEMBER = 100_000_000  # bytes per member: an image layer's size


def timed(argv: list[str], runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, timeout=3600)
        best = min(best, time.monotonic() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=1.0)
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kubeferry-bench-verify-"))
    try:
        block = os.urandom(1 << 20)
        members = []
        for index in range(max(1, int(options.size_gb * 1e9 // MEMBER))):
            path = work / f"m{index}"
            with open(path, "wb") as handle:
                for _ in range(MEMBER // len(block)):
                    handle.write(block)
            members.append(Member.from_file(f"images/blobs/sha256/m{index}", path))
        bundle = work / "bundle.tar"
        write_bundle(bundle, {"kubernetes": "1.25.0", "os": "el8", "arch": "amd64", "images": []},
                     members)
        for member in members:
            member.source.unlink()
        subprocess.run(["cat", str(bundle)], stdout=subprocess.DEVNULL, check=True)
        baseline = timed(["sha256sum", str(bundle)])
        verify = timed([sys.executable, "-m", "kubeferry.cli", "bundle", "verify", str(bundle)])
        size = bundle.stat().st_size
        print(f"bundle {size / 1e9:.2f} GB: sha256sum {baseline:.2f} s ({size / baseline / 1e6:.0f} MB/s),"
              f" bundle verify {verify:.2f} s ({size / verify / 1e6:.0f} MB/s):"
              f" {baseline / verify:.2f}x of sha256sum's throughput")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
