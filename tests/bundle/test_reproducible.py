"""Reproducible builds: the same sources and the same kubeferry give the same bytes, so a
second person can rebuild a bundle and compare it with the one that crossed the air gap."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubeferry.bundle.reader import Bundle
from kubeferry.lab.registry import Registry
from kubeferry.lab.upstream import mirrors

pytestmark = pytest.mark.real  # a registry, and the package index for the kit's wheels
EPOCH = "1700000000"  # 2023-11-14T22:13:20Z


def build(upstream: Registry, work: Path, epoch: str | None) -> Path:
    """A cold build (its own empty cache) of the kit and the images, through the CLI."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work)}
    env.update({"SOURCE_DATE_EPOCH": epoch} if epoch else {})
    flags = [flag for mirror in mirrors(upstream.url) for flag in ("--mirror", mirror)]
    result = subprocess.run(
        [sys.executable, "-m", "kubeferry.cli", "bundle", "build", "--k8s", "1.25.0", "--os", "el8",
         "--include", "kubeferry,images", *flags, "--cache-dir", str(work / "cache"),
         "--output", str(work / "out"), "--quiet"],
        capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
        env={**env, **{k: v for k, v in os.environ.items() if k.startswith("PIP_")}})
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip())


def test_two_cold_builds_give_the_same_bytes(upstream: Registry, tmp_path: Path) -> None:
    first = build(upstream, tmp_path / "a", EPOCH)
    second = build(upstream, tmp_path / "b", EPOCH)
    assert first.read_bytes() == second.read_bytes()  # the kit assembled twice by pex, too
    assert Bundle.open(first).metadata["created"] == "2023-11-14T22:13:20Z"
    with open(first, "rb") as handle:
        header = handle.read(512)
    assert int(header[136:147], 8) == int(EPOCH)  # every member's mtime
