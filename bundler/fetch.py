"""HTTP downloads into the content-addressed cache, each checked against a known checksum.

Layout (shared with the image blob store): ``cache/blobs/sha256/<hex>`` holds verified
files, published by rename only after their digest matched; ``cache/partial/`` holds
interrupted downloads, resumed with a Range request; ``cache/index/<algo>/<hex>`` maps a
metadata checksum of another algorithm (rpm-md may use sha1 or sha512) to the sha256 of
the same bytes. Metadata that names its own checksum (repomd.xml, InRelease) is fetched
fresh with ``get_bytes``; everything it points at is cached by checksum, so a rebuild
downloads only what changed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

import requests

from kubeferry import __version__, timeouts
from kubeferry.errors import OperationError
from kubeferry.outputs import os_error

RETRIES = 4
_CHUNK = 1 << 20
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}

Progress = Callable[[int], None]  # called with the number of bytes just received


class ChecksumMismatch(OperationError):
    """Downloaded bytes differ from the checksum the metadata or manifest pins."""


class Fetcher:
    """Downloads with explicit timeouts, bounded retries with backoff, and resume."""

    def __init__(self, cache_dir: Path, *, retries: int = RETRIES,
                 timeout: tuple[float, float] | None = None,  # None: kubeferry.timeouts' values
                 progress: Progress | None = None, backoff: float = 0.5,
                 ca_file: str | None = None):
        self.root = Path(cache_dir)
        self.ca_file = ca_file  # a CA bundle to trust instead of the default (pip's `cert`)
        self.blobs = self.root / "blobs" / "sha256"
        self.partial = self.root / "partial"
        self.locks = self.root / "locks"
        self.index = self.root / "index"
        for directory in (self.blobs, self.partial, self.locks, self.index):
            directory.mkdir(parents=True, exist_ok=True)
        self.retries = retries
        self.timeout = timeouts.resolve(timeout)
        self.progress = progress
        self.backoff = backoff
        self.downloaded_bytes = 0
        self.cached_bytes = 0
        self._local = threading.local()
        self._stats_lock = threading.Lock()

    # ---- plumbing --------------------------------------------------------------------
    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = f"kubeferry/{__version__}"
            if self.ca_file:
                session.verify = self.ca_file
            self._local.session = session
        return session

    def _request(self, url: str, what: str, headers: dict[str, str] | None = None
                 ) -> requests.Response:
        """A streaming GET, retried on connection errors, timeouts, 429 and 5xx."""
        delay = self.backoff
        last = ""
        timed_out = 0
        connect, read = self.timeout
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(delay)
                delay *= 2
            try:
                with timeouts.waiting(f"{urlsplit(url).netloc} to answer GET {urlsplit(url).path}", read):
                    response = self._session().get(url, stream=True, timeout=self.timeout,
                                                   headers=headers or {})
            except requests.RequestException as error:
                last = f"{type(error).__name__}: {error}"
                if isinstance(error, requests.Timeout) or "timed out" in str(error):
                    timed_out += 1
                    if timed_out > timeouts.TIMEOUT_RETRIES:  # a hang is not worth every retry
                        raise OperationError(
                            f"{what}: no answer from {url} within the timeouts ({connect:g} s"
                            f" connect, {read:g} s read), tried {timed_out} times;"
                            " --connect-timeout/--read-timeout to change") from None
                continue
            if response.status_code in _RETRY_STATUS:
                last = f"HTTP {response.status_code}"
                response.close()
                continue
            if response.status_code >= 400:
                response.close()
                raise OperationError(f"{what}: {url} answered HTTP {response.status_code}")
            return response
        raise OperationError(f"{what}: {url} failed after {self.retries + 1} attempts ({last})")

    def _count(self, downloaded: int = 0, cached: int = 0) -> None:
        with self._stats_lock:
            self.downloaded_bytes += downloaded
            self.cached_bytes += cached
        if downloaded and self.progress is not None:
            self.progress(downloaded)

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        with open(self.locks / key, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # ---- public ----------------------------------------------------------------------
    def get_bytes(self, url: str, what: str, limit: int = 64 << 20) -> bytes:
        """A small document fetched fresh (repomd.xml, InRelease, a GPG key)."""
        delay = self.backoff
        for attempt in range(self.retries + 1):
            response = self._request(url, what)
            try:
                data = bytearray()
                for chunk in response.iter_content(_CHUNK):
                    data += chunk
                    if len(data) > limit:
                        raise OperationError(f"{what}: {url} is larger than {limit} bytes")
                self._count(downloaded=len(data))
                return bytes(data)
            except requests.RequestException as error:
                if attempt == self.retries:
                    raise OperationError(f"{what}: {url} broke off ({error})") from None
                time.sleep(delay)
                delay *= 2
            finally:
                response.close()
        raise AssertionError("unreachable")

    def cached(self, checksum: tuple[str, str]) -> Path | None:
        """The cached file with this checksum, if any."""
        algo, hexdigest = checksum
        if algo == "sha256":
            path = self.blobs / hexdigest
            return path if path.is_file() else None
        pointer = self.index / algo / hexdigest
        if pointer.is_file():
            path = self.blobs / pointer.read_text().strip()
            if path.is_file():
                return path
        return None

    def fetch(self, url: str, checksum: tuple[str, str], what: str,
              size: int | None = None) -> Path:
        """The file at ``url`` in the cache, verified against ``checksum`` (algo, hex).

        Resumes a partial download; a mismatch deletes the bytes and fails naming the URL,
        the expected and the received checksum.
        """
        algo, expected = checksum[0].lower(), checksum[1].lower()
        if algo not in hashlib.algorithms_available or not expected.isalnum():
            raise OperationError(f"{what}: unusable checksum {algo}:{expected} for {url}")
        hit = self.cached((algo, expected))
        if hit is not None:
            self._count(cached=hit.stat().st_size)
            return hit
        key = f"{algo}-{expected}"
        with self._locked(key):
            hit = self.cached((algo, expected))
            if hit is not None:
                self._count(cached=hit.stat().st_size)
                return hit
            return self._download(url, algo, expected, what, size, key)

    def _download(self, url: str, algo: str, expected: str, what: str, size: int | None,
                  key: str) -> Path:
        part = self.partial / key
        for attempt in range(self.retries + 1):
            offset = part.stat().st_size if part.exists() else 0
            if size is not None and offset > size:
                part.unlink()
                offset = 0
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            response = self._request(url, what, headers)
            try:
                if offset and response.status_code != 206:
                    offset = 0  # the server ignored Range: start over
                with open(part, "ab" if offset else "wb") as out:
                    for chunk in response.iter_content(_CHUNK):
                        out.write(chunk)
                        self._count(downloaded=len(chunk))
                        if size is not None and out.tell() > size:
                            break
                break
            except OSError as error:  # requests' errors are OSErrors too
                if isinstance(error, requests.RequestException):
                    if attempt == self.retries:
                        raise OperationError(f"{what}: {url} broke off ({error}); run again to "
                                             "resume") from None
                    time.sleep(self.backoff * (2 ** attempt))
                    continue
                raise os_error(error, "cache file", part) from None  # the disk, not the network
            finally:
                response.close()
        wanted = hashlib.new(algo)
        sha256 = hashlib.sha256()
        with open(part, "rb") as handle:
            while True:
                block = handle.read(_CHUNK)
                if not block:
                    break
                wanted.update(block)
                sha256.update(block)
        got = wanted.hexdigest()
        if got != expected:
            part.unlink()
            raise ChecksumMismatch(
                f"{what}: checksum mismatch for {url}: expected {algo}:{expected}, got {algo}:{got}"
            )
        target = self.blobs / sha256.hexdigest()
        os.replace(part, target)
        if algo != "sha256":
            pointer_dir = self.index / algo
            pointer_dir.mkdir(parents=True, exist_ok=True)
            tmp = pointer_dir / f".{expected}.tmp"
            _write_cache_file(tmp, (sha256.hexdigest() + "\n").encode())
            os.replace(tmp, pointer_dir / expected)
        return target

    def put_bytes(self, data: bytes) -> Path:
        """Store generated bytes (repository metadata) content-addressed; their path."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.blobs / digest
        if not target.is_file():
            tmp = self.partial / f"put-{digest}-{os.getpid()}-{threading.get_ident()}"
            _write_cache_file(tmp, data)
            os.replace(tmp, target)
        return target



def _write_cache_file(path: Path, data: bytes) -> None:
    """Write a small cache file; a full disk names the file (the machine's fault, not a retry)."""
    try:
        path.write_bytes(data)
    except OSError as error:
        with contextlib.suppress(OSError):
            path.unlink()
        raise os_error(error, "cache file", path) from None
