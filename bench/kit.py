"""Benchmark: the admin kit (kubeferry.pyz): its size, its start-up, and getting it out of a
large bundle with tar.

1. The kit as `bundle build --include kubeferry` makes it (cached after the first build):
   size, and how much of it each project's wheels take.
2. Start-up of `python3 -I kubeferry.pyz --version`: the first run (an empty cache: the
   launcher copies the PEX out, pex unpacks the wheels this Python needs) and later runs,
   against `python3 -I -c pass` in the same run as the baseline.
3. Extraction: a 2 GB bundle (the kit, then 2 GB of image-sized members) and
   `tar -xf BUNDLE --occurrence kubeferry.pyz` against `tar -xf BUNDLE kubeferry.pyz`
   (which goes on to the end) and `cat BUNDLE > /dev/null`, from the file and from a pipe,
   in the same run.

Run: `.venv/bin/python bench/kit.py [--size-gb 2]`
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path

from kubeferry.bundle.format import KIT_MEMBER
from kubeferry.bundler.build import BuildRequest, build, default_cache_dir
from kubeferry.bundler.content import Member
from kubeferry.bundler.writer import write_bundle
from kubeferry.console import human_bytes

FILLER_MEMBER = 200_000_000  # bytes per filler member: the size of a large image layer


def timed(argv: list[str], runs: int = 1, **kwargs) -> float:
    """The best of ``runs`` wall times of ``argv``."""
    best = float("inf")
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, timeout=1800, **kwargs)
        best = min(best, time.monotonic() - started)
    return best


def kit_shares(kit: Path) -> Counter[str]:
    """Compressed bytes of the inner PEX per project (and pex's own bootstrap)."""
    with zipfile.ZipFile(kit) as outer:
        inner = zipfile.ZipFile(io.BytesIO(outer.read("kubeferry.pex")))
    shares: Counter[str] = Counter()
    for entry in inner.infolist():
        parts = entry.filename.split("/")
        shares[parts[1].split("-")[0] if parts[0] == ".deps" else parts[0]] += entry.compress_size
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0)
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kubeferry-bench-kit-"))
    try:
        started = time.monotonic()
        result = build(BuildRequest(kubernetes="1.25.0", os="el8", include=("kubeferry",),
                                    cache_dir=default_cache_dir(), output_dir=work / "kit"))
        kit_meta = result.metadata["kubeferry"]
        print(f"kit: {human_bytes(kit_meta['size'])} (build {time.monotonic() - started:.1f} s, "
              f"downloaded {human_bytes(result.downloaded)})")
        subprocess.run(["tar", "-xf", str(result.path), "--occurrence", KIT_MEMBER], cwd=work, check=True)
        kit = work / KIT_MEMBER
        for name, size in kit_shares(kit).most_common(8):
            print(f"  {name:<20}{human_bytes(size):>10}")

        python = sys.executable
        env = {"PATH": os.environ["PATH"], "HOME": str(work / "home")}
        first = []
        for _ in range(3):
            shutil.rmtree(work / "home", ignore_errors=True)
            first.append(timed([python, "-I", str(kit), "--version"], env=env))
        later = timed([python, "-I", str(kit), "--version"], runs=5, env=env)
        bare = timed([python, "-I", "-c", "pass"], runs=5, env=env)
        print(f"start-up: first {min(first):.2f} s, later {later:.2f} s; bare python {bare:.3f} s")

        fillers = []
        count = max(1, int(options.size_gb * 1e9 // FILLER_MEMBER))
        block = os.urandom(1 << 20)
        for index in range(count):
            path = work / f"filler{index}"
            with open(path, "wb") as handle:
                for _ in range(FILLER_MEMBER // len(block)):
                    handle.write(block)
            fillers.append(Member.from_file(f"images/blobs/sha256/filler{index}", path))
        kit_member = Member.from_file(KIT_MEMBER, kit)
        bundle = work / "big.tar"
        write_bundle(bundle, {"kubernetes": "1.25.0", "os": "el8", "arch": "amd64", "images": [],
                              "kubeferry": {**kit_meta}}, [kit_member, *fillers])
        for member in fillers:
            member.source.unlink()
        out = work / "out"
        out.mkdir()
        subprocess.run(["cat", str(bundle)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
        occurrence = timed(["tar", "-xf", str(bundle), "--occurrence", KIT_MEMBER], runs=3, cwd=out)
        whole = timed(["tar", "-xf", str(bundle), KIT_MEMBER], runs=3, cwd=out)
        cat = timed(["cat", str(bundle)], runs=3)
        # From a pipe (a data diode, `ssh host cat BUNDLE`): tar cannot seek past members.
        piped = timed(["sh", "-c", f"cat {bundle} | tar -xf - --occurrence {KIT_MEMBER}"], runs=3, cwd=out)
        piped_whole = timed(["sh", "-c", f"cat {bundle} | tar -xf - {KIT_MEMBER}"], runs=3, cwd=out)
        os.sync()
        subprocess.run(["sh", "-c", "echo 1 > /proc/sys/vm/drop_caches"], check=False)
        cold = timed(["tar", "-xf", str(bundle), "--occurrence", KIT_MEMBER], cwd=out)
        print(f"bundle {human_bytes(bundle.stat().st_size)}: tar --occurrence {occurrence:.3f} s "
              f"(cold cache {cold:.3f} s), without --occurrence {whole:.3f} s (tar seeks past "
              f"members of a file), cat {cat:.2f} s; from a pipe: --occurrence {piped:.3f} s, "
              f"without {piped_whole:.2f} s ({piped_whole / piped:.0f}x)")
        print(json.dumps({"kit_bytes": kit_meta["size"], "first_start_s": round(min(first), 2),
                          "later_start_s": round(later, 2), "bare_python_s": round(bare, 3),
                          "extract_occurrence_s": round(occurrence, 3), "extract_cold_s": round(cold, 3),
                          "extract_to_end_s": round(whole, 3), "cat_s": round(cat, 2),
                          "pipe_occurrence_s": round(piped, 3), "pipe_to_end_s": round(piped_whole, 2)}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
