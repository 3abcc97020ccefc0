"""Pure units: references, descriptors, the blob store, docker config files, challenges."""

from __future__ import annotations

import io
import json
import subprocess
import threading
from pathlib import Path

import pytest

from kubeferry.errors import InputError, OperationError
from kubeferry.oci.auth import Credentials, parse_challenge
from kubeferry.oci.reference import ImageReference
from kubeferry.oci.store import BlobStore, Descriptor, digest_of

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("calico/node:v3.24.5", "docker.io/calico/node:v3.24.5"),
        ("docker.io/calico/cni:v3.24.5", "docker.io/calico/cni:v3.24.5"),
        ("index.docker.io/nginx", "docker.io/library/nginx:latest"),
        ("registry.k8s.io/kube-apiserver:v1.25.0", "registry.k8s.io/kube-apiserver:v1.25.0"),
        ("registry.k8s.io/coredns/coredns:v1.9.3", "registry.k8s.io/coredns/coredns:v1.9.3"),
        ("localhost/pause:3.8", "localhost/pause:3.8"),
        ("127.0.0.1:5000/a/b@" + DIGEST, "127.0.0.1:5000/a/b@" + DIGEST),
        (
            "harbor.local:8443/p/etcd:3.5.4-0@" + DIGEST,
            "harbor.local:8443/p/etcd:3.5.4-0@" + DIGEST,
        ),
    ],
)
def test_reference_normalisation(name: str, expected: str) -> None:
    assert str(ImageReference.parse(name)) == expected


def test_reference_parts_and_copies() -> None:
    ref = ImageReference.parse("calico/node:v3.24.5")
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        "docker.io",
        "calico/node",
        "v3.24.5",
        None,
    )
    assert ref.reference == "v3.24.5"
    pinned = ref.with_digest(DIGEST)
    assert pinned.reference == DIGEST and pinned.tag == "v3.24.5"
    assert str(ref.with_registry("harbor.local").with_repository("k8s/node")) == (
        "harbor.local/k8s/node:v3.24.5"
    )
    assert str(ref.with_tag("v3.25.0")) == "docker.io/calico/node:v3.25.0"
    # a first component without '.', ':' and not localhost is a docker.io path
    assert ImageReference.parse("myregistry/app").registry == "docker.io"


@pytest.mark.parametrize(
    "name",
    ["", " busybox", "Busybox", "a//b", "a/b:", "a:-x", "a@sha256:123", "a@md5:" + "0" * 32],
)
def test_reference_refuses_malformed(name: str) -> None:
    with pytest.raises(InputError):
        ImageReference.parse(name)


def test_descriptor_round_trip_and_validation() -> None:
    data = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": DIGEST,
        "size": 12,
        "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
        "annotations": {"org.opencontainers.image.ref.name": "v1"},
    }
    descriptor = Descriptor.from_dict(data)
    assert descriptor.to_dict() == data
    assert Descriptor("t", DIGEST, 1).to_dict() == {"mediaType": "t", "digest": DIGEST, "size": 1}
    for bad in (
        {**data, "digest": "sha256:../../etc/passwd"},
        {**data, "size": -1},
        {**data, "size": True},
        {**data, "mediaType": None},
    ):
        with pytest.raises(OperationError):
            Descriptor.from_dict(bad, "manifest of x")


def test_store_put_get_and_verify(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digest = store.put_bytes(b"hello")
    assert digest == digest_of(b"hello")
    assert store.path(digest) == tmp_path / "blobs" / "sha256" / digest.split(":")[1]
    assert store.has(digest) and store.get_bytes(digest) == b"hello"
    assert store.put_bytes(b"hello", digest) == digest  # present: no-op
    with pytest.raises(OperationError, match="does not match its digest"):
        store.put_bytes(b"other", digest_of(b"hello!"))
    with pytest.raises(OperationError, match="invalid digest"):
        store.path("sha256:../../x")
    store.path(digest).write_bytes(b"tampered")
    with pytest.raises(OperationError, match="corrupt"):
        store.get_bytes(digest)


def test_store_on_a_full_disk_names_the_cache_file(tmp_path: Path) -> None:
    """ENOSPC while a blob is written is one OperationError naming the cache, no temp left."""
    root = tmp_path / "cache"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(root)], check=True,
                   timeout=30)
    try:
        store = BlobStore(root)
        for put in (lambda: store.put_bytes(b"x" * 256 * 1024),
                    lambda: store.put_stream(io.BytesIO(b"y" * 256 * 1024))):
            with pytest.raises(OperationError, match="No space left on device") as caught:
                put()
            assert str(root) in str(caught.value)
            assert not list((root / "blobs").rglob(".tmp-*"))
    finally:
        subprocess.run(["umount", str(root)], check=True, timeout=30)


def test_store_commit_partial(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    good = digest_of(b"payload")
    store.partial_path(good).write_bytes(b"payload")
    assert store.commit_partial(good) == store.path(good)
    assert store.has(good) and not store.partial_path(good).exists()
    bad = digest_of(b"expected")
    store.partial_path(bad).write_bytes(b"something else")
    with pytest.raises(OperationError, match=f"blob {bad} does not match its digest"):
        store.commit_partial(bad)
    assert not store.partial_path(bad).exists() and not store.has(bad)


def test_store_concurrent_writers_of_one_digest(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = b"x" * 1_000_000
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with store.lock(digest_of(data)):
                store.put_bytes(data, digest_of(data))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert store.get_bytes(digest_of(data)) == data
    assert [p.name for p in store.blobs_dir.iterdir()] == [digest_of(data).split(":")[1]]


def test_docker_config_credentials(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "auths": {
                    "https://index.docker.io/v1/": {"auth": "aHViOmh1YnBhc3M="},  # hub:hubpass
                    "harbor.local:8443": {"username": "admin", "password": "Harbor12345"},
                    "http://127.0.0.1:5000": {"auth": "YWxpY2U6czNjcmV0"},  # alice:s3cret
                }
            }
        )
    )
    credentials = Credentials.from_docker_config(config)
    hub = credentials.lookup("docker.io")
    assert hub is not None and (hub.username, hub.password) == ("hub", "hubpass")
    assert credentials.lookup("registry-1.docker.io") == hub
    harbor = credentials.lookup("harbor.local:8443")
    assert harbor is not None and harbor.username == "admin"
    assert credentials.lookup("127.0.0.1:5000").password == "s3cret"  # type: ignore[union-attr]
    assert credentials.lookup("registry.k8s.io") is None
    assert "Harbor12345" not in repr(harbor)


def test_docker_config_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputError, match="does not exist"):
        Credentials.from_docker_config(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        Credentials.from_docker_config(broken)
    broken.write_text(json.dumps({"auths": {"x": {"auth": "bm9jb2xvbg=="}}}))  # "nocolon"
    with pytest.raises(InputError, match="user:password"):
        Credentials.from_docker_config(broken)
    # the default location may be missing: that just means no credentials
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "nowhere"))
    assert not Credentials.from_docker_config()


def test_parse_challenge() -> None:
    bearer = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/busybox:pull"'
    )
    assert bearer is not None
    assert (bearer.scheme, bearer.realm, bearer.service, bearer.scope) == (
        "bearer",
        "https://auth.docker.io/token",
        "registry.docker.io",
        "repository:library/busybox:pull",
    )
    basic = parse_challenge('Basic realm="kubeferry-lab"')
    assert basic is not None and basic.scheme == "basic"
    assert parse_challenge(None) is None and parse_challenge("Negotiate abc") is None
