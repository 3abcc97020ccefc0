"""HTTP downloads into the content-addressed cache, each checked against a known checksum.

Files land in the build's one store (``kubeferry.oci.store.BlobStore``: the image blobs'
store), by sha256; a file pinned by another checksum (rpm-md may use sha1 or sha512) is
found again through the store's index. Metadata that names its own checksum (repomd.xml,
InRelease) is fetched fresh with ``get_bytes``; everything it points at is cached by
checksum, so a rebuild downloads only what changed. Sessions, retries and the resumable
transfer are ``kubeferry.transport``'s.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import requests

from kubeferry import timeouts, transport
from kubeferry.errors import OperationError
from kubeferry.oci.store import BlobStore

RETRIES = 4

Progress = Callable[[int], None]  # called with the number of bytes just received


class ChecksumMismatch(OperationError):
    """Downloaded bytes differ from the checksum the metadata or manifest pins."""


class Fetcher:
    """Verified downloads into the store, with the transport's timeouts, retries and resume."""

    def __init__(self, cache_dir: Path, *, retries: int = RETRIES,
                 timeout: tuple[float, float] | None = None,  # None: kubeferry.timeouts' values
                 progress: Progress | None = None, backoff: float = transport.BACKOFF,
                 ca_file: str | None = None, jobs: int = 4):
        self.store = BlobStore(cache_dir)
        # ca_file: a CA bundle to trust besides the machine's roots (pip's `cert`)
        self.session = transport.session(jobs=jobs, ca_files=(ca_file,), retries=retries,
                                         backoff=backoff, timeout=timeout)
        self.progress = progress
        self.downloaded_bytes = 0
        self.cached_bytes = 0
        self._stats_lock = threading.Lock()

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing --------------------------------------------------------------------
    def _get(self, url: str, what: str, headers: dict[str, str] | None = None) -> requests.Response:
        """A streaming GET, retried by the session on connection errors, timeouts, 429 and 5xx."""
        parts = urlsplit(url)
        try:
            with timeouts.waiting(f"{parts.netloc} to answer GET {parts.path}",
                                  timeouts.resolve(self.session.timeout)[1]):
                return self.session.get(url, stream=True, headers=headers or {})
        except requests.RequestException as error:
            failure = transport.unreachable(error, parts.netloc, "GET", parts.path, self.session,
                                            "pass the server's CA certificate")
            raise OperationError(f"{what}: {failure} ({url})") from None

    def _refuse(self, response: requests.Response, url: str, what: str) -> OperationError:
        tries = transport.attempts(response)
        said = f" {tries} times" if tries > 1 else ""
        return OperationError(f"{what}: {url} answered HTTP {response.status_code}{said}")

    def count(self, downloaded: int = 0, cached: int = 0) -> None:
        """Add to the byte counts (and report downloads to ``progress``)."""
        with self._stats_lock:
            self.downloaded_bytes += downloaded
            self.cached_bytes += cached
        if downloaded and self.progress is not None:
            self.progress(downloaded)

    # ---- public ----------------------------------------------------------------------
    def get_bytes(self, url: str, what: str, limit: int = 64 << 20) -> bytes:
        """A small document fetched fresh (repomd.xml, InRelease, a GPG key)."""
        for attempt in range(self.session.retries + 1):
            response = self._get(url, what)
            try:
                if response.status_code != 200:
                    raise self._refuse(response, url, what)
                data = bytearray()
                for chunk in response.iter_content(transport.CHUNK):
                    data += chunk
                    if len(data) > limit:
                        raise OperationError(f"{what}: {url} is larger than {limit} bytes")
                self.count(downloaded=len(data))
                return bytes(data)
            except requests.RequestException as error:
                if attempt == self.session.retries:
                    raise OperationError(f"{what}: {url} broke off ({transport.reason(error)})") from None
                self.session.backoff_sleep(transport.backoff_delay(self.session.backoff, attempt))
            finally:
                response.close()
        raise AssertionError("unreachable")

    def cached(self, checksum: tuple[str, str]) -> Path | None:
        """The cached file with this checksum, if any."""
        return self.store.find(f"{checksum[0].lower()}:{checksum[1].lower()}")

    def fetch(self, url: str, checksum: tuple[str, str], what: str,
              size: int | None = None) -> Path:
        """The file at ``url`` in the cache, verified against ``checksum`` (algo, hex).

        Resumes a partial download; a mismatch deletes the bytes and fails naming the URL,
        the expected and the received checksum.
        """
        algo, expected = checksum[0].lower(), checksum[1].lower()
        if algo not in hashlib.algorithms_available or not expected.isalnum():
            raise OperationError(f"{what}: unusable checksum {algo}:{expected} for {url}")
        digest = f"{algo}:{expected}"
        hit = self.store.find(digest)
        if hit is None:
            with self.store.lock(digest):
                hit = self.store.find(digest)
                if hit is None:
                    return self._download(url, digest, what, size)
        self.count(cached=hit.stat().st_size)
        return hit

    def _download(self, url: str, digest: str, what: str, size: int | None) -> Path:
        algo, _, expected = digest.partition(":")
        partial = self.store.partial_path(digest)

        def mismatch(got: str) -> ChecksumMismatch:
            return ChecksumMismatch(f"{what}: checksum mismatch for {url}: expected {algo}:{expected},"
                                    f" got {algo}:{got}")

        done = transport.download(
            lambda headers: self._get(url, what, headers), partial, checksum=(algo, expected),
            size=size, what=f"{what} ({url})", session=self.session,
            refuse=lambda response: self._refuse(response, url, what), mismatch=mismatch,
            progress=lambda n: self.count(downloaded=n))
        return self.store.adopt(partial, "sha256:" + done.sha256, alias=digest)

    def put_bytes(self, data: bytes) -> Path:
        """Store generated bytes (repository metadata) content-addressed; their path."""
        return self.store.path(self.store.put_bytes(data))
