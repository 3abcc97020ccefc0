"""Fixtures for the registry client tests: real registries, stand-in images, clients."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from kubeferry.lab.registry import Registry
from kubeferry.lab.standin_images import PushedImage, push_image, standin_layer
from kubeferry.oci.auth import Credentials
from kubeferry.oci.client import RegistryClient
from kubeferry.oci.store import BlobStore

BASE = b"stand-in base layer shared by every image\n"
SHAPES = ("oci-index", "docker-list", "oci-manifest", "docker-schema2")


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A plain-HTTP distribution registry holding one image of every shape."""
    with Registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture(scope="session")
def images(registry: Registry) -> dict[str, PushedImage]:
    """Stand-in images of every shape in ``registry``, all on one shared base layer.

    The middle layer is ~300 kB so faults can cut it mid-stream.
    """
    big = standin_layer("payload", 300_000, seed=7)
    pushed = {
        shape: push_image(
            registry.url,
            f"k8s/{shape}",
            "v1.0",
            [BASE, big, f"app {shape}\n".encode()],
            shape=shape,
        )
        for shape in SHAPES
    }
    pushed["other"] = push_image(registry.url, "calico/node", "v3.24.5", [BASE, b"calico node\n"])
    return pushed


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "cache")


@pytest.fixture
def make_client() -> Iterator[Callable[..., RegistryClient]]:
    """RegistryClient factory with fast backoff; closes what it made."""
    made: list[RegistryClient] = []

    def make(
        endpoints: dict[str, str] | None = None,
        credentials: Credentials | None = None,
        **options: object,
    ) -> RegistryClient:
        options.setdefault("backoff", 0.01)
        options.setdefault("timeout", 10.0)
        client = RegistryClient(endpoints, credentials, **options)  # type: ignore[arg-type]
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
