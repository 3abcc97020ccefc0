"""Downloads into the cache: checksum verification, retries, resume, clear failures."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from kubeferry.bundler.fetch import ChecksumMismatch, Fetcher
from kubeferry.errors import OperationError
from kubeferry.lab.static_http import StaticServer, cut


@pytest.fixture
def served(tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()
    payload = bytes(range(256)) * 4096  # 1 MiB
    (root / "pkg.rpm").write_bytes(payload)
    with StaticServer(root) as server:
        yield server, payload


def _fetcher(tmp_path: Path) -> Fetcher:
    return Fetcher(tmp_path / "cache", retries=3, backoff=0.01)


def test_fetch_verifies_and_caches(served, tmp_path: Path) -> None:
    server, payload = served
    fetcher = _fetcher(tmp_path)
    sha256 = hashlib.sha256(payload).hexdigest()
    path = fetcher.fetch(f"{server.url}/pkg.rpm", ("sha256", sha256), "test")
    assert path == tmp_path / "cache" / "blobs" / "sha256" / sha256
    assert path.read_bytes() == payload
    again = fetcher.fetch(f"{server.url}/pkg.rpm", ("sha256", sha256), "test")
    assert again == path and server.requests.count("/pkg.rpm") == 1
    assert fetcher.cached_bytes == len(payload) and fetcher.downloaded_bytes == len(payload)


def test_other_checksum_algorithms_map_to_sha256(served, tmp_path: Path) -> None:
    server, payload = served
    fetcher = _fetcher(tmp_path)
    sha1 = hashlib.sha1(payload).hexdigest()
    path = fetcher.fetch(f"{server.url}/pkg.rpm", ("sha1", sha1), "test")
    assert path.name == hashlib.sha256(payload).hexdigest()
    assert fetcher.cached(("sha1", sha1)) == path


def test_cut_download_resumes_with_range(served, tmp_path: Path) -> None:
    server, payload = served
    server.fault("/pkg.rpm", cut(300_000))
    fetcher = _fetcher(tmp_path)
    sha256 = hashlib.sha256(payload).hexdigest()
    path = fetcher.fetch(f"{server.url}/pkg.rpm", ("sha256", sha256), "test")
    assert path.read_bytes() == payload
    assert fetcher.downloaded_bytes == len(payload)  # the first 300 kB were not sent twice


def test_503_is_retried(served, tmp_path: Path) -> None:
    server, payload = served
    server.fault("/pkg.rpm", 503, 503)
    fetcher = _fetcher(tmp_path)
    fetcher.fetch(f"{server.url}/pkg.rpm", ("sha256", hashlib.sha256(payload).hexdigest()), "t")
    assert server.requests.count("/pkg.rpm") == 3


def test_mismatch_names_url_expected_and_got(served, tmp_path: Path) -> None:
    server, payload = served
    fetcher = _fetcher(tmp_path)
    wrong = "0" * 64
    with pytest.raises(ChecksumMismatch) as error:
        fetcher.fetch(f"{server.url}/pkg.rpm", ("sha256", wrong), "package x")
    message = str(error.value)
    assert f"{server.url}/pkg.rpm" in message and wrong in message
    assert hashlib.sha256(payload).hexdigest() in message
    assert not list((tmp_path / "cache" / "partial").iterdir())  # bad bytes are not kept


def test_missing_and_unreachable(served, tmp_path: Path) -> None:
    server, _ = served
    fetcher = _fetcher(tmp_path)
    with pytest.raises(OperationError, match="HTTP 404"):
        fetcher.get_bytes(f"{server.url}/nope", "repomd")
    with pytest.raises(OperationError, match="repomd: cannot reach 127.0.0.1:9: connection refused"):
        fetcher.get_bytes("http://127.0.0.1:9/x", "repomd")
