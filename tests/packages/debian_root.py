"""A debootstrap'd Debian 12 minbase root, built once and cached as a tarball.

``debootstrap --variant=minbase bookworm`` takes minutes, so the result is kept under
/var/cache/kubeferry-test (KUBEFERRY_TEST_CACHE) beside the point release it was built
from; a new bookworm point release rebuilds it, since a stale root would not match the
"installed set" a build assumes (the current bookworm main).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

MIRROR = "http://deb.debian.org/debian"


def cache_root() -> Path:
    path = Path(os.environ.get("KUBEFERRY_TEST_CACHE", "/var/cache/kubeferry-test"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _unmount_below(root: Path) -> None:
    """Undo any mount debootstrap left under ``root`` (it mounts /proc and /sys)."""
    prefix = str(root.resolve()) + "/"
    with open("/proc/mounts") as mounts:
        targets = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for target in sorted(targets, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, timeout=60, check=False)


def minbase_tarball(point_release: str) -> Path:
    """The cached tarball of a bookworm minbase root for ``point_release`` (e.g. 12.7)."""
    cache = cache_root()
    tarball = cache / f"bookworm-minbase-amd64-{point_release}.tar.gz"
    if tarball.exists():
        return tarball
    with _lock(cache / "bookworm-minbase.lock"):
        if tarball.exists():
            return tarball
        work = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=cache))
        try:
            root = work / "root"
            subprocess.run(["debootstrap", "--variant=minbase", "--arch=amd64", "bookworm",
                            str(root), MIRROR], check=True, capture_output=True, timeout=1800)
            _unmount_below(root)
            partial = work / "root.tar.gz"
            subprocess.run(["tar", "--numeric-owner", "-czf", str(partial), "-C", str(root), "."],
                           check=True, capture_output=True, timeout=600)
            os.replace(partial, tarball)
            for old in cache.glob("bookworm-minbase-amd64-*.tar.gz"):
                if old != tarball:
                    old.unlink()
        finally:
            _unmount_below(work)
            shutil.rmtree(work, ignore_errors=True)
    return tarball


def extract(tarball: Path, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "--numeric-owner", "-xpzf", str(tarball), "-C", str(target)],
                   check=True, capture_output=True, timeout=600)
    return target
