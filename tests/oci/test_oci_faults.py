"""Faults between the client and a real registry, injected by a proxy in between."""

from __future__ import annotations

import itertools
from typing import Callable

import pytest

from kubeferry.errors import OperationError
from kubeferry.lab.proxy import Exchange, Fault, Proxy
from kubeferry.lab.registry import Registry, free_port
from kubeferry.lab.standin_images import PushedImage
from kubeferry.oci.client import RegistryClient
from kubeferry.oci.reference import ImageReference
from kubeferry.oci.store import BlobStore
from kubeferry.transport import MAX_BACKOFF

pytestmark = pytest.mark.real

Client = Callable[..., RegistryClient]
REF = ImageReference.parse("registry.k8s.io/k8s/oci-index:v1.0")


def big_layer(images: dict[str, PushedImage]) -> str:
    """The ~300 kB layer of the OCI index image (amd64)."""
    layers = images["oci-index"].layers["linux/amd64"]
    return max(layers, key=lambda digest: images["oci-index"].blob_sizes[digest])


def test_blob_cut_mid_stream_resumes_with_range(
    registry: Registry, images: dict[str, PushedImage], store: BlobStore, make_client: Client
) -> None:
    digest = big_layer(images)
    size = images["oci-index"].blob_sizes[digest]
    cuts = itertools.count()

    def rule(exchange: Exchange) -> Fault | None:
        if exchange.method == "GET" and exchange.path.endswith(digest) and next(cuts) == 0:
            return Fault(cut_after=100_000)
        return None

    with Proxy(registry.url, rule) as proxy:
        result = make_client({"registry.k8s.io": proxy.url}).pull(REF, store)
        gets = proxy.requests("GET", digest)
    assert len(gets) == 2
    assert gets[0].header("Range") is None
    assert gets[1].header("Range") == "bytes=100000-" and gets[1].status == 206
    assert store.path(digest).stat().st_size == size
    assert store.get_bytes(digest)  # verified again on read
    assert result.bytes_downloaded >= size


def test_partial_left_by_an_earlier_run_is_resumed(
    registry: Registry, images: dict[str, PushedImage], store: BlobStore, make_client: Client
) -> None:
    digest = big_layer(images)
    data = registry.blob_path(digest).read_bytes()
    store.partial_path(digest).write_bytes(data[:123_456])
    image = make_client({"registry.k8s.io": registry.url}).resolve(REF)
    descriptor = next(layer for layer in image.layers if layer.digest == digest)
    with Proxy(registry.url) as proxy:
        client = make_client({"registry.k8s.io": proxy.url})
        fetched = client.fetch_blob(REF, descriptor, store)
        (get,) = proxy.requests("GET", digest)
    assert get.header("Range") == "bytes=123456-"
    assert fetched == len(data) - 123_456
    assert store.get_bytes(digest) == data


def test_stale_partial_and_a_server_ignoring_range_still_end_verified(
    registry: Registry, images: dict[str, PushedImage], store: BlobStore, make_client: Client
) -> None:
    digest = big_layer(images)
    data = registry.blob_path(digest).read_bytes()
    image = make_client({"registry.k8s.io": registry.url}).resolve(REF)
    descriptor = next(layer for layer in image.layers if layer.digest == digest)

    # 1. garbage from some earlier run: the resumed result mismatches, one clean retry fixes it
    store.partial_path(digest).write_bytes(b"\0" * 1000)
    assert make_client({"registry.k8s.io": registry.url}).fetch_blob(REF, descriptor, store)
    assert store.get_bytes(digest) == data

    # 2. a server answering 200 (whole blob) to a Range request: start again from byte 0
    store.path(digest).unlink()
    store.partial_path(digest).write_bytes(data[:5000])

    def full_answer(exchange: Exchange) -> Fault | None:
        if exchange.path.endswith(digest) and exchange.header("Range"):
            return Fault(status=200, body=data)
        return None

    with Proxy(registry.url, full_answer) as proxy:
        fetched = make_client({"registry.k8s.io": proxy.url}).fetch_blob(REF, descriptor, store)
    assert fetched == len(data)
    assert store.get_bytes(digest) == data


def test_a_transfer_that_keeps_breaking_fails_then_resumes_next_run(
    registry: Registry, images: dict[str, PushedImage], store: BlobStore, make_client: Client
) -> None:
    digest = big_layer(images)
    size = images["oci-index"].blob_sizes[digest]

    def always_cut(exchange: Exchange) -> Fault | None:
        return Fault(cut_after=20_000) if exchange.path.endswith(digest) else None

    with Proxy(registry.url, always_cut) as proxy:
        client = make_client({"registry.k8s.io": proxy.url}, max_retries=2)
        with pytest.raises(OperationError, match=f"blob {digest} of {REF}: .*run again to resume"):
            client.pull(REF, store)
    kept = store.partial_path(digest).stat().st_size
    assert 0 < kept < size and not store.has(digest)
    result = make_client({"registry.k8s.io": registry.url}).pull(REF, store)
    assert store.has(digest) and not store.partial_path(digest).exists()
    assert result.bytes_downloaded < size  # the kept bytes were not fetched again


def test_503_then_success_is_retried(
    registry: Registry, store: BlobStore, make_client: Client
) -> None:
    seen: dict[str, int] = {}

    def flaky(exchange: Exchange) -> Fault | None:
        key = f"{exchange.method} {exchange.path}"
        seen[key] = seen.get(key, 0) + 1
        return Fault(status=503) if seen[key] == 1 else None

    with Proxy(registry.url, flaky) as proxy:
        result = make_client({"registry.k8s.io": proxy.url}).pull(REF, store)
        manifest_gets = proxy.requests("GET", "/manifests/")
    assert result.image.manifest_digest
    assert [e.status for e in manifest_gets[:2]] == [503, 200]
    assert all(count == 2 for count in seen.values())  # each request failed once, then worked


def test_429_honours_retry_after_within_bounds(registry: Registry, make_client: Client) -> None:
    answers = iter([Fault(status=429, headers={"Retry-After": "2"}),
                    Fault(status=429, headers={"Retry-After": "3600"})])

    def limited(exchange: Exchange) -> Fault | None:
        if exchange.method == "GET" and "/manifests/" in exchange.path:
            return next(answers, None)
        return None

    with Proxy(registry.url, limited) as proxy:
        client = make_client({"registry.k8s.io": proxy.url})
        delays: list[float] = []
        client.sleep = delays.append
        image = client.resolve(REF)
    assert image.manifest_digest
    assert delays[:2] == [2.0, MAX_BACKOFF]


def test_persistent_5xx_fails_with_one_clear_line(registry: Registry, make_client: Client) -> None:
    with Proxy(registry.url, lambda exchange: Fault(status=502)) as proxy:
        client = make_client({"registry.k8s.io": proxy.url}, max_retries=2)
        with pytest.raises(OperationError) as caught:
            client.resolve(REF)
    message = str(caught.value)
    assert "\n" not in message
    assert f"registry.k8s.io at {proxy.url} answered HTTP 502" in message
    assert "3 times" in message


def test_wrong_bytes_fail_naming_image_and_digest(
    registry: Registry, images: dict[str, PushedImage], store: BlobStore, make_client: Client
) -> None:
    digest = big_layer(images)

    def corrupt(exchange: Exchange) -> Fault | None:
        return Fault(corrupt=True) if exchange.path.endswith(digest) else None

    with Proxy(registry.url, corrupt) as proxy:
        client = make_client({"registry.k8s.io": proxy.url})
        with pytest.raises(OperationError) as caught:
            client.pull(REF, store)
    assert str(caught.value).startswith(
        f"blob {digest} of registry.k8s.io/k8s/oci-index:v1.0 does not match its digest "
        "(got sha256:"
    )
    assert not store.has(digest) and not store.partial_path(digest).exists()


def test_registry_down_is_one_clear_line(store: BlobStore, make_client: Client) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = make_client({"registry.k8s.io": url}, max_retries=2)
    with pytest.raises(OperationError) as caught:
        client.pull(REF, store)
    assert str(caught.value) == f"cannot reach registry.k8s.io at {url}: connection refused"


def test_redirect_loops_are_bounded(registry: Registry, make_client: Client) -> None:
    def loop(exchange: Exchange) -> Fault:
        return Fault(status=302, headers={"Location": exchange.path + "x"})

    with Proxy(None, loop) as proxy:
        client = make_client({"registry.k8s.io": proxy.url})
        with pytest.raises(OperationError, match="more than 5 redirects"):
            client.resolve(REF)
        assert len(proxy.requests()) == 6
