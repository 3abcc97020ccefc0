"""Where the lab keeps things on the admin host, each overridable by an environment variable.

Three places because they live differently: the base root cache survives runs (minutes to
rebuild), a site's runtime state is small and dies with the machine (/run), and node disks
can grow to gigabytes so they stay off /run's memory-backed tmpfs.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The debootstrap cache: built base roots and the downloaded .debs."""
    return Path(os.environ.get("KUBEFERRY_LAB_CACHE", "/var/cache/kubeferry-lab"))


def run_dir() -> Path:
    """Runtime state of every site: ``<run_dir>/<site>/state.json``, keys, known_hosts."""
    return Path(os.environ.get("KUBEFERRY_LAB_RUN", "/run/kubeferry-lab"))


def data_dir() -> Path:
    """Node disks: per-node overlay layers and containerd state, ``<data_dir>/<site>/``."""
    return Path(os.environ.get("KUBEFERRY_LAB_DATA", "/var/lib/kubeferry-lab"))
