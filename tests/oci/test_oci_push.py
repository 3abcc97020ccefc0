"""Pushing from the blob store into a second registry: skip, mount, re-push, token scopes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

import pytest

from kubeferry.errors import OperationError
from kubeferry.lab.proxy import Proxy
from kubeferry.lab.registry import Registry, write_docker_config
from kubeferry.lab.standin_images import PushedImage
from kubeferry.lab.token_service import TokenService
from kubeferry.oci import mediatypes
from kubeferry.oci.auth import Credentials
from kubeferry.oci.client import RegistryClient
from kubeferry.oci.reference import ImageReference
from kubeferry.oci.store import BlobStore

pytestmark = pytest.mark.real

Client = Callable[..., RegistryClient]
SOURCE = ImageReference.parse("registry.k8s.io/k8s/docker-list:v1.0")


@pytest.fixture
def target(tmp_path: Path) -> Iterator[tuple[Registry, Proxy]]:
    """An empty registry behind a proxy that counts what the client sends."""
    with Registry(tmp_path / "target") as running, Proxy(running.url) as proxy:
        yield running, proxy


def uploads(proxy: Proxy) -> list[str]:
    """Blob upload requests (POST to start, PUT to finish) the proxy saw."""
    return [
        f"{e.method} {e.path}" for e in proxy.requests() if "/blobs/uploads/" in e.path
    ]


def test_push_then_re_push_sends_no_blob(
    registry: Registry,
    images: dict[str, PushedImage],
    store: BlobStore,
    make_client: Client,
    target: tuple[Registry, Proxy],
) -> None:
    _, proxy = target
    puller = make_client({"registry.k8s.io": registry.url})
    image = puller.pull(SOURCE, store).image
    pusher = make_client({"harbor.local": proxy.url})
    dest = ImageReference.parse("harbor.local/google_containers/app:v1.0")
    sent = pusher.push_image(dest, image, store)
    assert sent == sum(blob.size for blob in image.blobs)
    assert len([u for u in uploads(proxy) if u.startswith("PUT")]) == len(image.blobs)

    # the pushed image reads back identically, by tag, from the second registry
    again = make_client({"harbor.local": proxy.url}).resolve(dest)
    assert again.manifest_digest == image.manifest_digest
    assert again.manifest_media_type == mediatypes.DOCKER_MANIFEST

    proxy.clear()
    assert pusher.push_image(dest, image, store) == 0
    assert uploads(proxy) == []  # every blob was found by HEAD
    assert [e.method for e in proxy.requests()] == ["HEAD"] * len(image.blobs) + ["PUT"]


def test_blob_exists_push_blob_and_push_manifest_by_digest(
    registry: Registry,
    images: dict[str, PushedImage],
    store: BlobStore,
    make_client: Client,
    target: tuple[Registry, Proxy],
) -> None:
    _, proxy = target
    image = make_client({"registry.k8s.io": registry.url}).pull(SOURCE, store).image
    client = make_client({"harbor.local": proxy.url})
    dest = ImageReference.parse("harbor.local/k8s/app@" + image.manifest_digest)
    assert client.ping("harbor.local")
    layer = image.layers[0]
    assert not client.blob_exists(dest, layer.digest)
    assert client.push_blob(dest, layer, store) == layer.size
    assert client.blob_exists(dest, layer.digest)
    assert client.push_blob(dest, layer, store) == 0
    for blob in image.blobs:
        client.push_blob(dest, blob, store)
    assert client.push_manifest(dest, image.manifest, image.manifest_media_type) == (
        image.manifest_digest
    )
    assert client.resolve(dest).config == image.config
    dangling = {
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_MANIFEST,
        "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": "sha256:" + "0" * 64, "size": 2},
        "layers": [],
    }
    with pytest.raises(OperationError, match=r"push of manifest sha256:\w+ to .*: .*HTTP 400"):
        client.push_manifest(
            ImageReference.parse("harbor.local/k8s/other:v1"),
            json.dumps(dangling).encode(),
            mediatypes.OCI_MANIFEST,
        )


def test_cross_repository_mount(
    registry: Registry,
    images: dict[str, PushedImage],
    store: BlobStore,
    make_client: Client,
    target: tuple[Registry, Proxy],
) -> None:
    _, proxy = target
    image = make_client({"registry.k8s.io": registry.url}).pull(SOURCE, store).image
    client = make_client({"harbor.local": proxy.url})
    first = ImageReference.parse("harbor.local/project-a/app:v1.0")
    client.push_image(first, image, store)
    proxy.clear()
    second = ImageReference.parse("harbor.local/project-b/app:v1.0")
    assert client.push_image(second, image, store, mount_from="project-a/app") == 0
    mounts = [e for e in proxy.requests("POST") if "mount=" in e.path]
    assert len(mounts) == len(image.blobs) and all(e.status == 201 for e in mounts)
    assert [u for u in uploads(proxy) if u.startswith("PUT")] == []
    # a blob the source repository does not have falls back to an upload (202)
    assert not client.mount_blob(second, "sha256:" + "1" * 64, "project-a/app")


def test_push_with_token_auth_scopes(
    registry: Registry,
    images: dict[str, PushedImage],
    store: BlobStore,
    make_client: Client,
    tmp_path: Path,
) -> None:
    granted: list[tuple[str | None, str, list[str]]] = []

    def rules(username: str | None, repository: str, actions: list[str]) -> list[str]:
        granted.append((username, repository, actions))
        return actions if username == "seeder" else []

    image = make_client({"registry.k8s.io": registry.url}).pull(SOURCE, store).image
    with TokenService(tmp_path / "token", {"seeder": "s33d"}, rules) as service, Registry(
        tmp_path / "harbor", token=service
    ) as harbor:
        credentials = Credentials.from_docker_config(
            write_docker_config(tmp_path / "auth.json", harbor.host, "seeder", "s33d")
        )
        client = make_client({harbor.host: harbor.url}, credentials)
        first = ImageReference.parse(f"{harbor.host}/library/app:v1")
        client.push_image(first, image, store)
        client.push_image(
            ImageReference.parse(f"{harbor.host}/mirror/app:v1"), image, store, "library/app"
        )
        anonymous = make_client({harbor.host: harbor.url})
        with pytest.raises(OperationError, match="access denied"):
            anonymous.push_image(first, image, store)
    scopes = {scope for request in service.requests for scope in request.scopes}
    assert "repository:library/app:pull,push" in scopes
    assert "repository:mirror/app:pull,push" in scopes and "repository:library/app:pull" in scopes
