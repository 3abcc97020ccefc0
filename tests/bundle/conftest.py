"""A stand-in upstream (registry.k8s.io and docker.io on one local registry) for build tests."""

from __future__ import annotations

from typing import Iterator

import pytest

from kubeferry.lab.containerd import Containerd
from kubeferry.lab.registry import Registry
from kubeferry.lab.upstream import seed_upstream


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A real distribution registry seeded with tiny stand-ins of 1.25.0 and 1.25.1."""
    with Registry(tmp_path_factory.mktemp("upstream")) as registry:
        seed_upstream(registry.url, "1.25.0")
        seed_upstream(registry.url, "1.25.1")
        yield registry


@pytest.fixture(scope="session")
def containerd() -> Iterator[Containerd]:
    with Containerd() as running:
        yield running
