"""--image-source docker: images from Debian's real dockerd, loaded from tars the test makes."""

from __future__ import annotations

import gzip
import hashlib
import json
from typing import Callable, Iterator

import docker
import pytest

from kubeferry.errors import OperationError
from kubeferry.lab.dockerd import DockerDaemon
from kubeferry.lab.registry import Registry
from kubeferry.lab.standin_images import docker_archive, standin_layer
from kubeferry.oci import mediatypes
from kubeferry.oci.client import RegistryClient
from kubeferry.oci.docker_source import DockerSource
from kubeferry.oci.reference import ImageReference
from kubeferry.oci.store import BlobStore

pytestmark = pytest.mark.real

BASE = b"base layer shared by both images\n"
APISERVER = "registry.k8s.io/kube-apiserver:v1.25.0"
NODE = "docker.io/calico/node:v3.24.5"


@pytest.fixture(scope="module")
def daemon() -> Iterator[DockerDaemon]:
    with DockerDaemon() as running:
        client = docker.DockerClient(base_url=running.base_url, timeout=60)
        try:
            payload = standin_layer("apiserver", 200_000, seed=3)
            client.images.load(docker_archive(APISERVER, [BASE, payload]))
            client.images.load(docker_archive(NODE, [BASE, b"calico node\n"]))
            client.images.load(docker_archive("example.org/arm/only:1", [b"x"], arch="arm64"))
        finally:
            client.close()
        yield running


def test_image_from_docker_into_the_store(daemon: DockerDaemon, store: BlobStore) -> None:
    with DockerSource(daemon.base_url) as source:
        first = source.pull(ImageReference.parse(APISERVER), store)
        image = first.image
        inspector = docker.DockerClient(base_url=daemon.base_url)
        image_id = inspector.images.get(APISERVER).id
        inspector.close()
    assert image.config.digest == image_id  # the config is stored byte for byte
    assert image.manifest_media_type == mediatypes.DOCKER_MANIFEST
    manifest = json.loads(store.get_bytes(image.manifest_digest))
    assert manifest["config"] == image.config.to_dict()
    config = json.loads(store.get_bytes(image.config.digest))
    assert image.platform == {"architecture": "amd64", "os": "linux"}
    for layer, diff_id in zip(image.layers, config["rootfs"]["diff_ids"]):
        assert layer.media_type == mediatypes.DOCKER_LAYER_GZIP
        raw = gzip.decompress(store.get_bytes(layer.digest))
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == diff_id
    assert first.bytes_downloaded > 200_000
    assert set(image.fetched_blobs) == {blob.digest for blob in image.blobs}

    with DockerSource(daemon.base_url) as source:
        warm = source.pull(ImageReference.parse(APISERVER), store)
        other = source.pull(ImageReference.parse("calico/node:v3.24.5"), store)
    assert warm.bytes_downloaded == 0 and warm.image.manifest_digest == image.manifest_digest
    assert warm.image.fetched_blobs == () and warm.image.fetched_bytes == 0
    assert other.image.layers[0].digest == image.layers[0].digest  # shared base, one blob


def test_docker_sourced_image_is_a_valid_registry_image(
    daemon: DockerDaemon,
    registry: Registry,
    store: BlobStore,
    make_client: Callable[..., RegistryClient],
) -> None:
    with DockerSource(daemon.base_url) as source:
        image = source.resolve(ImageReference.parse(NODE), store=store)
    client = make_client({"docker.io": registry.url})
    target = ImageReference.parse("docker.io/fromdocker/node:v3.24.5")
    client.push_image(target, image, store)
    again = client.resolve(target)
    assert again.manifest_digest == image.manifest_digest and again.layers == image.layers


def test_docker_source_errors(daemon: DockerDaemon, store: BlobStore) -> None:
    with DockerSource(daemon.base_url) as source:
        with pytest.raises(OperationError, match="is not in the local Docker Engine"):
            source.resolve(ImageReference.parse("registry.k8s.io/absent:v1"), store=store)
        with pytest.raises(OperationError, match="is linux/arm64, not linux/amd64"):
            source.resolve(ImageReference.parse("example.org/arm/only:1"), store=store)
    with pytest.raises(OperationError, match="cannot reach the Docker Engine at unix:///nonexist"):
        DockerSource("unix:///nonexistent/docker.sock", timeout=5)
