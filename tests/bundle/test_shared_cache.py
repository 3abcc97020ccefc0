"""One content-addressed cache, one lock scheme: builds (real processes) sharing a cache at
once, and the package fetcher and the registry client excluding each other on one digest."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from kubeferry.bundle.reader import Bundle
from kubeferry.bundler.fetch import Fetcher
from kubeferry.bundler.files import pinned_files
from kubeferry.lab.proxy import Exchange, Proxy
from kubeferry.lab.registry import Registry
from kubeferry.lab.static_http import StaticServer
from kubeferry.lab.upstream_packages import file_path, make_tree
from kubeferry.oci.store import BlobStore

pytestmark = pytest.mark.real
KUBEFERRY = [sys.executable, "-m", "kubeferry.cli"]
KUBERNETES = "1.25.0"
ROUND_TRIP = 0.05  # each request waits this long at the proxy, so the two builds overlap


def _slow(exchange: Exchange) -> None:
    time.sleep(ROUND_TRIP)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def test_two_builds_sharing_one_cache_at_once(upstream: Registry, tmp_path: Path) -> None:
    """Both bundles are whole and equal; every blob and file crossed the network once; the
    cache holds each file once under its sha256, with no partial or temp file left."""
    www = make_tree(tmp_path / "www", KUBERNETES, families=())
    cache = tmp_path / "cache"
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    env.pop("KUBEFERRY_DEBUG", None)
    with StaticServer(www) as files, Proxy(files.url, _slow) as file_proxy, \
            Proxy(upstream.url, _slow) as registry_proxy:
        sources = tmp_path / "sources.yaml"
        sources.write_text(yaml.safe_dump({"files": {
            name: f"{file_proxy.url}/{file_path(entry['url'])}"
            for name, entry in pinned_files(KUBERNETES).items()}}))
        builds = [subprocess.Popen(
            [*KUBEFERRY, "bundle", "build", "--k8s", KUBERNETES, "--include", "images,files",
             "--mirror", f"registry.k8s.io={registry_proxy.url}",
             "--mirror", f"docker.io={registry_proxy.url}", "--sources", str(sources),
             "--cache-dir", str(cache), "--output", str(tmp_path / f"out{n}"), "--quiet"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env) for n in (1, 2)]
        try:
            outputs = [build.communicate(timeout=300) for build in builds]
        finally:
            for build in builds:
                if build.poll() is None:
                    build.kill()
                    build.wait(timeout=30)
        blob_gets = [e.path for e in registry_proxy.requests("GET", "/blobs/")]
        file_gets = [e.path for e in file_proxy.requests("GET")]
    for build, (_, stderr) in zip(builds, outputs):
        assert build.returncode == 0, stderr

    bundles = [next((tmp_path / f"out{n}").iterdir()) for n in (1, 2)]
    assert _sha256(bundles[0]) == _sha256(bundles[1])
    for bundle in bundles:
        verified = subprocess.run([*KUBEFERRY, "bundle", "verify", str(bundle)], capture_output=True,
                                  text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert verified.returncode == 0, verified.stderr
    # one writer per digest: the second build found what the first one wrote
    assert sorted(blob_gets) == sorted(set(blob_gets)), blob_gets
    assert len(file_gets) == len(set(file_gets)) == len(pinned_files(KUBERNETES)), file_gets

    store = BlobStore(cache)
    held = {path.name for path in store.blobs_dir.iterdir()}
    for name in held:
        assert _sha256(store.blobs_dir / name) == name
    members = Bundle.open(bundles[0]).members
    assert {m["sha256"] for m in members if m["path"].startswith(("images/blobs/", "files/"))} <= held
    assert not list(store.partial_dir.iterdir())
    assert not [name for name in held if name.startswith(".")]


def test_the_fetcher_waits_for_the_store_writer_of_one_digest(tmp_path: Path) -> None:
    """A package download and an image blob download of the same bytes take one lock: the
    fetcher waits while the store's writer holds it, then finds the file instead of
    fetching it again."""
    payload = os.urandom(200_000)
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "file.bin").write_bytes(payload)
    store = BlobStore(tmp_path / "cache")
    fetched: list[Path] = []
    with StaticServer(tmp_path / "www") as server, Proxy(server.url) as proxy, \
            Fetcher(tmp_path / "cache") as fetcher:
        with store.lock(digest):
            worker = threading.Thread(target=lambda: fetched.append(fetcher.fetch(
                f"{proxy.url}/file.bin", ("sha256", digest.split(":")[1]), "test file")))
            worker.start()
            worker.join(timeout=1.0)
            assert worker.is_alive() and not proxy.requests()  # waiting on the lock
            store.put_bytes(payload, digest)  # the other writer finishes
        worker.join(timeout=30)
        assert not worker.is_alive()
        assert fetched == [store.path(digest)] and not proxy.requests()
