"""The download cache the lab's bundle-build tests share with tests/packages: Debian's
metadata and packages are fetched once per machine (KUBEFERRY_TEST_CACHE)."""

from __future__ import annotations

import os
from pathlib import Path


def download_cache() -> Path:
    path = Path(os.environ.get("KUBEFERRY_TEST_CACHE", "/var/cache/kubeferry-test"))
    path.mkdir(parents=True, exist_ok=True)
    return path / "build-cache"
