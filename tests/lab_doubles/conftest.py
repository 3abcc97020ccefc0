"""Fixtures for the lab doubles' tests; the harness itself is in doubles_harness.py."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from doubles_harness import PUSH_SCRIPT, SITE_IMAGES, VERSION, Lab

from kubeferry.lab.registry import Registry
from kubeferry.lab.standin_packages import build_debs


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "lab_doubles" in str(item.fspath):
            item.add_marker(pytest.mark.real)


@pytest.fixture(scope="session")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stand-in .debs, built with this interpreter as the doubles' shebang, extracted."""
    out = tmp_path_factory.mktemp("debs")
    root = tmp_path_factory.mktemp("pkgroot")
    for deb in build_debs(VERSION, out, interpreter=sys.executable):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, timeout=60)
    return root


@pytest.fixture(scope="session")
def netns() -> Iterator[str]:
    """A network namespace with only loopback: the site, air-gapped for real."""
    name = f"kfd{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=30)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=30)


@pytest.fixture(scope="session")
def site_registry(netns: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A real docker-registry on 127.0.0.1:5000 inside the namespace, seeded with stand-ins."""
    registry = Registry(tmp_path_factory.mktemp("registry"), netns=netns).start()
    try:
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                netns,
                sys.executable,
                "-c",
                PUSH_SCRIPT,
                registry.url,
                json.dumps(SITE_IMAGES),
            ],
            check=True,
            timeout=120,
            capture_output=True,
        )
        yield registry
    finally:
        registry.cleanup()


@pytest.fixture
def lab(packages: Path, netns: str, site_registry: Registry) -> Iterator[Lab]:
    lab = Lab(packages, netns)
    try:
        yield lab
    finally:
        lab.close()
