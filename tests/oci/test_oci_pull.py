"""Pulling from a real distribution registry over plain HTTP: every shape, the cache."""

from __future__ import annotations

import json
import threading
from typing import Callable

import pytest

from kubeferry.errors import OperationError
from kubeferry.lab.proxy import Exchange, Fault, Proxy
from kubeferry.lab.registry import Registry
from kubeferry.lab.standin_images import PushedImage
from kubeferry.oci import mediatypes
from kubeferry.oci.client import RegistryClient
from kubeferry.oci.reference import ImageReference
from kubeferry.oci.store import BlobStore, digest_of

pytestmark = pytest.mark.real

Client = Callable[..., RegistryClient]

EXPECTED_TYPES = {
    "oci-index": (mediatypes.OCI_INDEX, mediatypes.OCI_MANIFEST),
    "docker-list": (mediatypes.DOCKER_MANIFEST_LIST, mediatypes.DOCKER_MANIFEST),
    "oci-manifest": (None, mediatypes.OCI_MANIFEST),
    "docker-schema2": (None, mediatypes.DOCKER_MANIFEST),
}


@pytest.mark.parametrize("shape", list(EXPECTED_TYPES))
def test_pull_every_shape_under_the_upstream_name(
    shape: str,
    registry: Registry,
    images: dict[str, PushedImage],
    store: BlobStore,
    make_client: Client,
) -> None:
    client = make_client({"registry.k8s.io": registry.url})
    ref = ImageReference.parse(f"registry.k8s.io/k8s/{shape}:v1.0")
    result = client.pull(ref, store)
    image, pushed = result.image, images[shape]
    index_type, manifest_type = EXPECTED_TYPES[shape]
    assert image.reference == ref
    assert image.index_media_type == index_type
    assert image.index_digest == (pushed.digest if index_type else None)
    assert image.manifest_media_type == manifest_type
    assert image.manifest_digest == pushed.manifests["linux/amd64"]
    assert digest_of(image.manifest) == image.manifest_digest
    assert image.config.digest == pushed.configs["linux/amd64"]
    assert [layer.digest for layer in image.layers] == pushed.layers["linux/amd64"]
    assert image.platform["architecture"] == "amd64" and image.platform["os"] == "linux"
    for blob in image.blobs:
        assert store.has(blob.digest)
        assert store.path(blob.digest).stat().st_size == blob.size
    assert store.has(image.manifest_digest)
    if index_type:
        assert store.has(image.index_digest)  # type: ignore[arg-type]
    assert result.bytes_cached == 0
    assert result.bytes_downloaded >= sum(blob.size for blob in image.blobs)


@pytest.mark.parametrize("shape", ["oci-index", "docker-list"])
def test_index_picks_the_arm64_child(
    shape: str, registry: Registry, images: dict[str, PushedImage], make_client: Client
) -> None:
    client = make_client({"registry.k8s.io": registry.url})
    image = client.resolve(ImageReference.parse(f"registry.k8s.io/k8s/{shape}:v1.0"), arch="arm64")
    assert image.manifest_digest == images[shape].manifests["linux/arm64"]
    assert image.platform == {"architecture": "arm64", "os": "linux", "variant": "v8"}
    assert [layer.digest for layer in image.layers] == images[shape].layers["linux/arm64"]


def test_missing_platform_and_wrong_single_platform_fail_clearly(
    registry: Registry, images: dict[str, PushedImage], make_client: Client
) -> None:
    client = make_client({"registry.k8s.io": registry.url})
    with pytest.raises(OperationError, match=r"has no linux/s390x image \(it has: linux/amd64"):
        client.resolve(ImageReference.parse("registry.k8s.io/k8s/oci-index:v1.0"), arch="s390x")
    with pytest.raises(OperationError, match="image for linux/amd64, not linux/arm64"):
        client.resolve(ImageReference.parse("registry.k8s.io/k8s/oci-manifest:v1.0"), arch="arm64")
    with pytest.raises(OperationError, match=r"not found at registry.k8s.io at http://127\.0\.0\.1"):
        client.resolve(ImageReference.parse("registry.k8s.io/k8s/absent:v1.0"))


def test_digest_pinned_reference(
    registry: Registry, images: dict[str, PushedImage], store: BlobStore, make_client: Client
) -> None:
    client = make_client({"docker.io": registry.url})
    pinned = f"docker.io/k8s/docker-list@{images['docker-list'].digest}"
    image = client.resolve(ImageReference.parse(pinned), store=store)
    assert image.index_digest == images["docker-list"].digest
    assert image.manifest_digest == images["docker-list"].manifests["linux/amd64"]


def test_shared_layers_download_once_and_warm_rebuild_downloads_nothing(
    registry: Registry, images: dict[str, PushedImage], store: BlobStore, make_client: Client
) -> None:
    with Proxy(registry.url) as proxy:
        client = make_client({"registry.k8s.io": proxy.url, "docker.io": proxy.url})
        first = client.pull(ImageReference.parse("registry.k8s.io/k8s/oci-index:v1.0"), store)
        second = client.pull(ImageReference.parse("calico/node:v3.24.5"), store)
        shared = images["other"].layers["linux/amd64"][0]
        assert shared == first.image.layers[0].digest  # one base blob, two images
        assert second.bytes_cached == first.image.layers[0].size
        blob_gets = [e.path.rsplit("/", 1)[1] for e in proxy.requests("GET", "/blobs/")]
        assert blob_gets.count(shared) == 1

        proxy.clear()
        warm = client.pull(ImageReference.parse("registry.k8s.io/k8s/oci-index:v1.0"), store)
        assert warm.bytes_downloaded == 0
        assert warm.bytes_cached == sum(blob.size for blob in warm.image.blobs)
        assert warm.image.manifest_digest == first.image.manifest_digest
        assert proxy.requests("GET") == []  # only the tag's HEAD went out
        assert [e.method for e in proxy.requests()] == ["HEAD"]


def test_parallel_pulls_sharing_a_layer(
    registry: Registry, images: dict[str, PushedImage], store: BlobStore, make_client: Client
) -> None:
    client = make_client({"registry.k8s.io": registry.url})
    names = [f"registry.k8s.io/k8s/{shape}:v1.0" for shape in EXPECTED_TYPES]
    errors: list[BaseException] = []

    def pull(name: str) -> None:
        try:
            client.pull(ImageReference.parse(name), store, workers=4)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=pull, args=(name,)) for name in names * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    for digest in store.digests():
        store.get_bytes(digest)  # every published blob verifies
    assert list(store.partial_dir.iterdir()) == []


def test_schema1_is_refused_clearly(registry: Registry, make_client: Client) -> None:
    schema1 = json.dumps({"schemaVersion": 1, "name": "old/image", "tag": "v1", "fsLayers": []})

    def rule(exchange: Exchange) -> Fault | None:
        if "/manifests/" in exchange.path:
            return Fault(
                status=200,
                headers={"Content-Type": mediatypes.DOCKER_SCHEMA1_SIGNED},
                body=schema1.encode(),
            )
        return None

    with Proxy(registry.url, rule) as proxy:
        client = make_client({"registry.k8s.io": proxy.url})
        with pytest.raises(OperationError, match="Docker schema 1 manifest"):
            client.resolve(ImageReference.parse("registry.k8s.io/old/image:v1"))


def test_manifest_not_matching_its_digest_is_refused(
    registry: Registry, images: dict[str, PushedImage], make_client: Client
) -> None:
    def rule(exchange: Exchange) -> Fault | None:
        if "/manifests/" in exchange.path and exchange.method == "GET":
            return Fault(
                status=200,
                headers={
                    "Content-Type": mediatypes.OCI_MANIFEST,
                    "Docker-Content-Digest": images["oci-manifest"].digest,
                },
                body=b'{"schemaVersion": 2, "layers": []}',
            )
        return None

    with Proxy(registry.url, rule) as proxy:
        client = make_client({"registry.k8s.io": proxy.url})
        with pytest.raises(OperationError, match="does not match the registry's digest"):
            client.resolve(ImageReference.parse("registry.k8s.io/k8s/oci-manifest:v1.0"))
        pinned = ImageReference.parse(
            f"registry.k8s.io/k8s/oci-manifest@{images['oci-manifest'].digest}"
        )
        with pytest.raises(OperationError, match=f"manifest {pinned.digest} of .* does not match"):
            client.resolve(pinned)
