"""Harbor's registry behaviour: no push into a missing project; pull rules; real clients."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests
from harbor_helpers import admin, auth_file, call, cert_dir, skopeo

from kubeferry.errors import OperationError
from kubeferry.lab.harbor import HarborStandIn
from kubeferry.lab.registry import Registry
from kubeferry.oci.auth import Credentials
from kubeferry.oci.client import RegistryClient
from kubeferry.oci.reference import ImageReference
from kubeferry.oci.store import BlobStore

pytestmark = pytest.mark.real

PAUSE = "registry.k8s.io/pause:3.8"


def client_for(harbor: HarborStandIn, login: tuple[str, str] | None) -> RegistryClient:
    credentials = Credentials()
    if login:
        credentials.add(harbor.host, *login)
    return RegistryClient({harbor.host: harbor.url}, credentials, harbor.ca_file, timeout=10,
                          max_retries=1, backoff=0.01)


def test_push_into_a_missing_project_is_refused_then_accepted(
        harbor: HarborStandIn, upstream: Registry, tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "cache")
    with RegistryClient({"registry.k8s.io": upstream.url}) as puller:
        image = puller.pull(ImageReference.parse(PAUSE), store).image
    target = ImageReference(harbor.host, "site/pause", "3.8")
    with client_for(harbor, admin(harbor)) as pusher:
        with pytest.raises(OperationError, match=r"HTTP 401"):
            pusher.push_image(target, image, store)
        with pytest.raises(OperationError, match=r"HTTP 401: project site not found"):
            pusher.mount_blob(target, image.config.digest, "library/pause")  # a POST: body says why
        assert harbor.tokens is not None
        # the token service granted nothing in a project that does not exist
        asked = [r for r in harbor.tokens.requests if any("site/pause" in s for s in r.scopes)]
        assert asked and all(r.username == "admin" for r in asked)
        assert [g for r in asked for g in r.granted if g["name"] == "site/pause"] == []
        assert call(harbor, "POST", "/projects", auth=admin(harbor),
                    json={"project_name": "site"}).status_code == 201
        sent = pusher.push_image(target, image, store)
    assert sent == sum(blob.size for blob in image.blobs)
    # a private project: the admin pulls, nobody else
    with client_for(harbor, admin(harbor)) as reader:
        assert reader.resolve(target).manifest_digest == image.manifest_digest
    with client_for(harbor, None) as anonymous, pytest.raises(OperationError, match="401"):
        anonymous.resolve(target)
    with client_for(harbor, ("dev", "dev-pass-1")) as dev, pytest.raises(OperationError, match="401"):
        dev.push_image(target, image, store)  # not the owner: no push
    assert harbor._repo_count("site") == 1


def test_anonymous_pull_from_a_public_project(harbor: HarborStandIn, upstream: Registry,
                                              tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "cache")
    with RegistryClient({"registry.k8s.io": upstream.url}) as puller:
        image = puller.pull(ImageReference.parse(PAUSE), store).image
    target = ImageReference(harbor.host, "library/pause", "3.8")  # library: public from the start
    with client_for(harbor, admin(harbor)) as pusher:
        pusher.push_image(target, image, store)
    with client_for(harbor, None) as anonymous:
        pulled = anonymous.pull(target, BlobStore(tmp_path / "again"))
    assert pulled.image.manifest_digest == image.manifest_digest
    with client_for(harbor, None) as anonymous, pytest.raises(OperationError, match="401"):
        anonymous.push_image(ImageReference(harbor.host, "library/other", "1"), image, store)


def test_skopeo_copy_refused_then_accepted_and_inspect(harbor: HarborStandIn, upstream: Registry,
                                                      tmp_path: Path) -> None:
    """skopeo (containers/image): POST, PATCH, PUT uploads through the stand-in's /v2/ proxy."""
    certs = cert_dir(harbor, tmp_path / "certs")
    authfile = auth_file(harbor, tmp_path / "auth.json")
    source = f"docker://{upstream.host}/calico/node:v3.24.5"
    dest = f"docker://{harbor.host}/calico/node:v3.24.5"
    copy = ["copy", "--all", "--src-tls-verify=false", "--dest-cert-dir", str(certs),
            "--dest-authfile", str(authfile), source, dest]
    refused = skopeo(*copy)
    assert refused.returncode != 0
    assert "project calico not found" in refused.stderr or "unauthorized" in refused.stderr.lower()
    assert call(harbor, "POST", "/projects", auth=admin(harbor),
                json={"project_name": "calico", "metadata": {"public": "true"}}).status_code == 201
    accepted = skopeo(*copy)
    assert accepted.returncode == 0, accepted.stderr
    # anonymous inspect of a public project, trusting only the lab CA
    inspected = skopeo("inspect", "--cert-dir", str(certs), dest)
    assert inspected.returncode == 0, inspected.stderr
    upstream_digest = json.loads(skopeo("inspect", "--tls-verify=false", source).stdout)["Digest"]
    assert json.loads(inspected.stdout)["Digest"] == upstream_digest
    # without the CA, skopeo refuses the stand-in's certificate
    untrusted = skopeo("inspect", dest)
    assert untrusted.returncode != 0 and "certificate" in untrusted.stderr


def test_a_chunked_upload_streams_through(harbor: HarborStandIn) -> None:
    """A PATCH with Transfer-Encoding: chunked (what a client streaming an unknown length
    sends) reaches the registry intact."""
    data = bytes(range(256)) * 4096 + b"tail"  # 1 MiB and a bit: several chunks
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert call(harbor, "POST", "/projects", auth=admin(harbor),
                json={"project_name": "raw"}).status_code == 201
    with requests.Session() as session:
        session.trust_env = False
        session.verify = harbor.ca_file
        token = session.get(f"{harbor.url}/service/token", auth=admin(harbor), timeout=10, params={
            "service": "harbor-registry", "scope": "repository:raw/blob:pull,push"}).json()["token"]
        session.headers["Authorization"] = f"Bearer {token}"
        start = session.post(f"{harbor.url}/v2/raw/blob/blobs/uploads/", timeout=10)
        assert start.status_code == 202, start.text
        location = urljoin(harbor.url, start.headers["Location"])
        assert location.startswith(harbor.url)  # the registry names the public address
        pieces = (data[i:i + 100_000] for i in range(0, len(data), 100_000))
        patch = session.patch(location, data=pieces, timeout=30)
        assert patch.status_code == 202, patch.text
        exchange = harbor.requests("PATCH")[-1]
        assert exchange.header("Transfer-Encoding") == "chunked"
        done = session.put(urljoin(harbor.url, patch.headers["Location"]),
                           params={"digest": digest}, timeout=10)
        assert done.status_code == 201, done.text
        fetched = session.get(f"{harbor.url}/v2/raw/blob/blobs/{digest}", timeout=10)
    assert fetched.content == data
