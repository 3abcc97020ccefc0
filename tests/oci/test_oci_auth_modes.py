"""HTTPS with a lab CA, htpasswd Basic auth, token auth, and redirects to other hosts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from kubeferry.errors import OperationError
from kubeferry.lab.proxy import Exchange, Fault, Proxy
from kubeferry.lab.registry import Registry, write_docker_config
from kubeferry.lab.standin_images import push_image
from kubeferry.lab.token_service import TokenService
from kubeferry.oci.auth import Credentials
from kubeferry.oci.client import RegistryClient
from kubeferry.oci.reference import ImageReference
from kubeferry.oci.store import BlobStore

pytestmark = pytest.mark.real

Client = Callable[..., RegistryClient]
BOB = ("bob", "b0b-pa55")
BASE = b"stand-in base layer shared by every image\n"


# -- HTTPS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with Registry(tmp_path_factory.mktemp("tls"), tls=True) as running:
        push_image(running.url, "pause", "3.8", [BASE, b"pause\n"], ca_file=running.ca_file)
        yield running


def test_https_with_the_lab_ca(
    tls_registry: Registry, store: BlobStore, make_client: Client
) -> None:
    client = make_client({"registry.k8s.io": tls_registry.url}, ca_file=tls_registry.ca_file)
    result = client.pull(ImageReference.parse("registry.k8s.io/pause:3.8"), store)
    assert store.has(result.image.config.digest)


def test_https_without_the_ca_fails_clearly(tls_registry: Registry, make_client: Client) -> None:
    client = make_client({"registry.k8s.io": tls_registry.url})
    with pytest.raises(OperationError) as caught:
        client.resolve(ImageReference.parse("registry.k8s.io/pause:3.8"))
    message = str(caught.value)
    assert message.startswith(f"cannot reach registry.k8s.io at {tls_registry.url}: ")
    assert "certificate verify failed" in message and "pass the registry's CA" in message
    assert "\n" not in message


# -- htpasswd Basic auth ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with Registry(tmp_path_factory.mktemp("basic"), htpasswd=dict([BOB])) as running:
        push_image(running.url, "etcd", "3.5.4-0", [BASE, b"etcd\n"], auth=BOB)
        yield running


def test_basic_auth_with_a_docker_config_file(
    basic_registry: Registry, store: BlobStore, make_client: Client, tmp_path: Path
) -> None:
    config = write_docker_config(tmp_path / "auth.json", basic_registry.host, *BOB)
    credentials = Credentials.from_docker_config(config)
    client = make_client({"registry.k8s.io": basic_registry.url}, credentials)
    result = client.pull(ImageReference.parse("registry.k8s.io/etcd:3.5.4-0"), store)
    assert store.has(result.image.layers[-1].digest)


def test_basic_auth_without_or_with_wrong_credentials(
    basic_registry: Registry, make_client: Client
) -> None:
    ref = ImageReference.parse("registry.k8s.io/etcd:3.5.4-0")
    with pytest.raises(OperationError, match="needs a username and password .*--registry-auth"):
        make_client({"registry.k8s.io": basic_registry.url}).resolve(ref)
    wrong = Credentials()
    wrong.add(basic_registry.host, "bob", "not-the-password")
    client = make_client({"registry.k8s.io": basic_registry.url}, wrong)
    with pytest.raises(OperationError, match=r"access denied by .* \(HTTP 401"):
        client.resolve(ref)


# -- token auth -------------------------------------------------------------------------------


def rules(username: str | None, repository: str, actions: list[str]) -> list[str]:
    """public/* is pullable by anyone; everything else needs bob; only bob pushes."""
    if username == "bob":
        return actions
    return ["pull"] if repository.startswith("public/") and "pull" in actions else []


@pytest.fixture(scope="module")
def token_setup(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[TokenService, Registry]]:
    workdir = tmp_path_factory.mktemp("token")
    with TokenService(workdir, users=dict([BOB]), authorize=rules) as service, Registry(
        workdir / "registry", token=service
    ) as running:
        push_image(running.url, "public/coredns", "v1.9.3", [BASE, b"coredns\n"], auth=BOB)
        push_image(running.url, "private/apiserver", "v1.25.0", [BASE, b"apiserver\n"], auth=BOB)
        service.requests.clear()
        yield service, running


def test_token_auth_anonymous_pull_allowed_by_the_rules(
    token_setup: tuple[TokenService, Registry], store: BlobStore, make_client: Client
) -> None:
    service, running = token_setup
    service.requests.clear()
    client = make_client({"registry.k8s.io": running.url})
    result = client.pull(ImageReference.parse("registry.k8s.io/public/coredns:v1.9.3"), store)
    assert len(result.image.layers) == 2
    assert [(r.username, r.scopes) for r in service.requests] == [
        (None, ["repository:public/coredns:pull"])
    ]  # one token, reused for the HEAD, the GETs and every parallel blob download


def test_token_auth_anonymous_pull_refused_by_the_rules(
    token_setup: tuple[TokenService, Registry], make_client: Client
) -> None:
    _, running = token_setup
    client = make_client({"registry.k8s.io": running.url})
    with pytest.raises(OperationError) as caught:
        client.resolve(ImageReference.parse("registry.k8s.io/private/apiserver:v1.25.0"))
    assert str(caught.value).startswith(
        f"manifest v1.25.0 of registry.k8s.io/private/apiserver:v1.25.0: access denied by "
        f"registry.k8s.io at {running.url} (HTTP 401"
    )


def test_token_auth_with_credentials_from_a_docker_config(
    token_setup: tuple[TokenService, Registry],
    store: BlobStore,
    make_client: Client,
    tmp_path: Path,
) -> None:
    service, running = token_setup
    service.requests.clear()
    credentials = Credentials.from_docker_config(
        write_docker_config(tmp_path / "auth.json", running.host, *BOB)
    )
    client = make_client({"registry.k8s.io": running.url}, credentials)
    client.pull(ImageReference.parse("registry.k8s.io/private/apiserver:v1.25.0"), store)
    assert {(r.username, tuple(r.scopes)) for r in service.requests} == {
        ("bob", ("repository:private/apiserver:pull",))
    }

    wrong = Credentials()
    wrong.add(running.host, "bob", "guess")
    with pytest.raises(OperationError, match="refused the credentials of user 'bob'"):
        make_client({"registry.k8s.io": running.url}, wrong).resolve(
            ImageReference.parse("registry.k8s.io/private/apiserver:v1.25.0")
        )


# -- redirects to another host ----------------------------------------------------------------


def test_blob_redirected_to_another_host_never_gets_the_authorization_header(
    token_setup: tuple[TokenService, Registry],
    store: BlobStore,
    make_client: Client,
    tmp_path: Path,
) -> None:
    """Like a registry handing blobs to object storage: the 307 target must not see our token."""
    _, running = token_setup

    def storage(exchange: Exchange) -> Fault:
        digest = exchange.path.split("?")[0].rsplit("/", 1)[1]
        return Fault(status=200, body=running.blob_path(digest).read_bytes())

    with Proxy(None, storage, addr="127.0.0.2") as storage_host:

        def redirect_blobs(exchange: Exchange) -> Fault | None:
            if exchange.method == "GET" and "/blobs/sha256:" in exchange.path:
                digest = exchange.path.rsplit("/", 1)[1]
                location = f"{storage_host.url}/storage/{digest}?signature=abc"
                return Fault(status=307, headers={"Location": location})
            return None

        with Proxy(running.url, redirect_blobs) as front:
            credentials = Credentials.from_docker_config(
                write_docker_config(tmp_path / "auth.json", front.host, *BOB)
            )
            client = make_client({"registry.k8s.io": front.url}, credentials)
            image = ImageReference.parse("registry.k8s.io/private/apiserver:v1.25.0")
            result = client.pull(image, store)
            front_blob_gets = front.requests("GET", "/blobs/")
            storage_gets = storage_host.requests("GET")
    assert len(storage_gets) == len(result.image.blobs)
    assert all(e.header("Authorization") is None for e in storage_gets)
    assert front_blob_gets and all(
        (e.header("Authorization") or "").startswith("Bearer ") for e in front_blob_gets
    )


def test_every_call_redirected_like_registry_k8s_io(
    token_setup: tuple[TokenService, Registry],
    store: BlobStore,
    make_client: Client,
    tmp_path: Path,
) -> None:
    """registry.k8s.io answers every /v2/ call with 307 to a host with its own token realm.

    The target's challenge gets an anonymous token: our credentials (for the front host)
    are never sent to it, nor to its token service.
    """
    service, running = token_setup
    with Proxy(running.url, addr="127.0.0.2") as backend:

        def redirect_all(exchange: Exchange) -> Fault:
            return Fault(status=307, headers={"Location": backend.url + exchange.path})

        with Proxy(None, redirect_all) as front:
            credentials = Credentials.from_docker_config(
                write_docker_config(tmp_path / "auth.json", front.host, *BOB)
            )
            service.requests.clear()
            client = make_client({"registry.k8s.io": front.url}, credentials)
            ref = ImageReference.parse("registry.k8s.io/public/coredns:v1.9.3")
            result = client.pull(ref, store)
            backend_requests = backend.requests()
            front_requests = front.requests()
    assert store.has(result.image.layers[-1].digest)
    assert front_requests and all(e.status == 307 for e in front_requests)
    assert all(e.header("Authorization") is None for e in front_requests)  # it never challenged
    assert all(
        (e.header("Authorization") or "Bearer -").startswith("Bearer ") for e in backend_requests
    )
    assert [r.username for r in service.requests] == [None]


def test_expired_tokens_are_fetched_again(
    tmp_path: Path, store: BlobStore, make_client: Client
) -> None:
    """Tokens are reused within their expires_in (here 1 s) and fetched anew after it."""
    with TokenService(
        tmp_path, users=dict([BOB]), anonymous_pull=True, lifetime=1
    ) as service, Registry(tmp_path / "registry", token=service) as running:
        push_image(running.url, "public/pause", "3.8", [BASE], auth=BOB)
        service.requests.clear()
        client = make_client({"registry.k8s.io": running.url})
        ref = ImageReference.parse("registry.k8s.io/public/pause:3.8")
        client.resolve(ref)
        client.resolve(ref)
        assert len(service.requests) == 1
        time.sleep(1.0)
        client.resolve(ref)
        assert len(service.requests) == 2
