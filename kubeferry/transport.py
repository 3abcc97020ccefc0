"""HTTP for every kubeferry client: one Session factory, one retry policy, one resumable download.

The registry client (``kubeferry.oci.client``), the package and file fetcher
(``bundler.fetch``, which also serves the package index lookups of ``bundler.pyindex``) and
Harbor's API client (``installer.harbor_api``) all make their sessions with ``session()``:

- connection pools sized for the client's parallel jobs and its round-trip lane
  (``ROUND_TRIP_LANE``), so every connection in use stays open for the next request;
- trust: the machine's roots as requests finds them (``REQUESTS_CA_BUNDLE``,
  ``CURL_CA_BUNDLE``, else certifi) plus any CA file given (a registry's or Harbor's CA,
  pip's ``cert``), in one bundle, since requests takes one path and a redirect target or
  another registry must stay trusted;
- every request bounded by ``kubeferry.timeouts`` (``--connect-timeout``/``--read-timeout``);
- retries by urllib3's ``Retry``: 429 and 5xx answers, refused and reset connections, with
  exponential backoff; ``Retry-After`` is honoured up to ``MAX_BACKOFF``; a request that
  timed out is tried ``TIMEOUT_RETRIES`` more times only (a hang is not worth five); a TLS
  failure is not retried (the certificate will not change);
- proxies from the environment (``HTTPS_PROXY``, ``NO_PROXY``) as requests reads them, but
  never ``~/.netrc`` credentials and never cookies (Harbor's CSRF check trips on a ``sid``
  sent back).

``download()`` is the one resumable transfer: it appends to a partial file with ``Range``,
hashes while it streams, restarts when a server ignores the range, and leaves a partial
file only ever verified before a store publishes it.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import http.cookiejar
import os
import re
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, NewConnectionError
from urllib3.util.retry import Retry
from urllib3.util.ssl_ import create_urllib3_context

from kubeferry import __version__, timeouts
from kubeferry.errors import InputError, OperationError
from kubeferry.outputs import os_error

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# --jobs bounds the transfers that move bulk; requests that only wait on a round trip
# (manifests, HEADs, tokens, mounts, small blobs) may run this many times as many at once
ROUND_TRIP_LANE = 4
SMALL_BODY = 1 << 20  # a blob below this is a round trip's wait more than a transfer
RETRIES = 5
BACKOFF = 0.5
MAX_BACKOFF = 30.0
CHUNK = 1 << 20
USER_AGENT = f"kubeferry/{__version__}"
# Errors while reading a body: the connection broke, timed out or ended early.
STREAM_ERRORS = (urllib3.exceptions.HTTPError, requests.exceptions.RequestException, OSError)

Sleep = Callable[[float], None]
Progress = Callable[[int], None]


class RetryPolicy(Retry):
    """urllib3's Retry with kubeferry's rules on top: timeouts retried ``TIMEOUT_RETRIES``
    times only, ``Retry-After`` capped at MAX_BACKOFF, and a sleep the caller can observe."""

    def __init__(self, *args: Any, sleep: Sleep | None = None,
                 timeouts_left: int = timeouts.TIMEOUT_RETRIES, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sleeper = sleep or time.sleep
        self.timeouts_left = timeouts_left

    def new(self, **kwargs: Any) -> RetryPolicy:
        kwargs.setdefault("sleep", self.sleeper)
        kwargs.setdefault("timeouts_left", self.timeouts_left)
        return super().new(**kwargs)  # type: ignore[return-value]

    def increment(self, method: str | None = None, url: str | None = None, response: Any = None,
                  error: Exception | None = None, _pool: Any = None, _stacktrace: Any = None
                  ) -> RetryPolicy:
        if error is not None and is_timeout(error):
            if self.timeouts_left <= 0:
                raise MaxRetryError(_pool, url or "", error) from error
            retry = super().increment(method, url, response, error, _pool, _stacktrace)
            retry.timeouts_left = self.timeouts_left - 1
            return retry  # type: ignore[return-value]
        return super().increment(method, url, response, error, _pool, _stacktrace)  # type: ignore[return-value]

    def sleep(self, response: Any = None) -> None:
        delay = self.get_backoff_time()
        if response is not None and self.respect_retry_after_header:
            with contextlib.suppress(urllib3.exceptions.InvalidHeader):
                asked = self.get_retry_after(response)
                if asked is not None:
                    delay = max(delay, asked)
        if delay > 0:
            self.sleeper(min(delay, MAX_BACKOFF))


def backoff_delay(backoff: float, attempt: int) -> float:
    """The wait before retry number ``attempt + 1`` of a broken transfer."""
    return min(backoff * (2 ** attempt), MAX_BACKOFF)


class Session(requests.Session):
    """A requests Session that keeps its own trust and timeouts on every request.

    requests lets ``REQUESTS_CA_BUNDLE`` override a session's ``verify`` (requests#3829):
    a CA bundle given here wins. ``sleep`` is every wait between tries (replaceable, so a
    test can watch the backoff).
    """

    def __init__(self) -> None:
        super().__init__()
        self.timeout: float | tuple[float, float] | None = None  # None: kubeferry.timeouts'
        self.retries = RETRIES
        self.backoff = BACKOFF
        self.sleep: Sleep = time.sleep
        self._ca_temp: str | None = None

    def backoff_sleep(self, seconds: float) -> None:
        """Wait between two tries (not waiting for an answer: no 'waiting for' notice)."""
        with timeouts.paused():
            self.sleep(seconds)

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = timeouts.resolve(self.timeout)
        return super().request(method, url, *args, **kwargs)

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any,
                                   cert: Any) -> dict[str, Any]:
        if verify is None and isinstance(self.verify, str):
            verify = self.verify
        return super().merge_environment_settings(url, proxies, stream, verify, cert)

    def close(self) -> None:
        super().close()
        if self._ca_temp:
            _unlink_quietly(self._ca_temp)
            self._ca_temp = None


class _Adapter(HTTPAdapter):
    """Connections that send a streamed body in CHUNK blocks (urllib3's default is 16 KiB:
    an upload of a 100 MB layer then takes 6,000 reads, hashes and TLS writes), and that
    share one TLS context per trust bundle: urllib3 otherwise parses the whole CA bundle
    again for every new connection (tens of ms of CPU each, many per seed)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("blocksize", CHUNK)
        super().init_poolmanager(*args, **kwargs)

    def build_connection_pool_key_attributes(self, request: Any, verify: Any, cert: Any = None
                                             ) -> tuple[dict[str, Any], dict[str, Any]]:
        host, pool = super().build_connection_pool_key_attributes(request, verify, cert)
        bundle = _bundle_of(str(request.url), verify)
        if bundle is not None:
            pool.pop("ca_certs", None)
            pool["ssl_context"] = _tls_context(bundle)
        return host, pool

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        super().cert_verify(conn, url, verify, cert)
        if _bundle_of(url, verify) is not None:
            conn.ca_certs = None  # its ssl_context holds the bundle: not loaded again per connection


def _bundle_of(url: str, verify: Any) -> str | None:
    """The CA bundle file a verified https request trusts (requests' default: certifi's)."""
    if not url.lower().startswith("https") or verify is False:
        return None
    bundle = verify if isinstance(verify, str) else requests.utils.DEFAULT_CA_BUNDLE_PATH
    return None if os.path.isdir(bundle) else bundle


_contexts: dict[str, ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def _tls_context(ca_file: str) -> ssl.SSLContext:
    """A verifying TLS context trusting ``ca_file``, made once per file."""
    with _contexts_lock:
        context = _contexts.get(ca_file)
        if context is None:
            context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
            context.load_verify_locations(ca_file)
            _contexts[ca_file] = context
        return context


def session(*, jobs: int = 4, ca_files: tuple[str | None, ...] = (), retries: int = RETRIES,
            backoff: float = BACKOFF, timeout: float | tuple[float, float] | None = None) -> Session:
    """A Session for one client: ``jobs`` pooled connections per host, trust, retries."""
    made = Session()
    made.timeout = timeout
    made.retries = retries
    made.backoff = backoff
    policy = RetryPolicy(
        total=retries, other=0, redirect=False, status_forcelist=RETRY_STATUSES, allowed_methods=None,
        backoff_factor=backoff, backoff_max=MAX_BACKOFF, raise_on_status=False,
        respect_retry_after_header=True, sleep=made.backoff_sleep,
    )
    adapter = _Adapter(pool_connections=8, pool_maxsize=max(1, jobs) * (1 + ROUND_TRIP_LANE),
                       max_retries=policy)
    made.mount("http://", adapter)
    made.mount("https://", adapter)
    made.headers["User-Agent"] = USER_AGENT
    made.auth = lambda request: request  # keeps requests from adding ~/.netrc credentials
    made.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    extra = [path for path in ca_files if path]
    if extra:
        made._ca_temp = made.verify = trust_bundle(extra)
    return made


def trust_bundle(ca_files: list[str]) -> str:
    """A temp CA file trusting ``ca_files`` as well as the machine's roots (its caller removes it)."""
    custom = []
    for ca_file in ca_files:
        try:
            data = Path(ca_file).read_bytes()
        except OSError as error:
            raise InputError(f"cannot read CA file {ca_file}: {error.strerror}") from None
        if b"-----BEGIN CERTIFICATE-----" not in data:
            raise InputError(f"CA file {ca_file} holds no PEM certificate")
        custom.append(data)
    system = (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
              or requests.utils.DEFAULT_CA_BUNDLE_PATH)
    try:
        roots = Path(system).read_bytes()
    except OSError:
        roots = b""
    with tempfile.NamedTemporaryFile(prefix="kubeferry-ca-", suffix=".pem", delete=False) as out:
        out.write(b"\n".join([roots, *custom]))
    atexit.register(_unlink_quietly, out.name)  # Session.close() removes it earlier
    return out.name


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


class Rewindable:
    """A request body opened by a factory: urllib3 rewinds it (seek(0)) before a retry, which
    opens it again, so a retried upload sends every byte again, verified again."""

    def __init__(self, opener: Callable[[], BinaryIO]) -> None:
        self._opener = opener
        self._reader = opener()
        self._position = 0

    def __len__(self) -> int:
        """The bytes left to send (requests sends a Content-Length from it, not chunks)."""
        try:
            total = len(self._reader)  # type: ignore[arg-type]
        except TypeError:
            total = os.fstat(self._reader.fileno()).st_size
        return total - self._position

    def read(self, amount: int = -1) -> bytes:
        chunk = self._reader.read(amount)
        self._position += len(chunk)
        return chunk

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = 0) -> int:
        if (offset, whence) != (0, 0):
            raise OSError("a request body can only be rewound to its start")
        if self._position:
            self._reader.close()
            self._reader = self._opener()
            self._position = 0
        return 0

    def close(self) -> None:
        self._reader.close()


# -- failures ------------------------------------------------------------------------------


def is_timeout(error: BaseException) -> bool:
    """Whether ``error`` (requests' or urllib3's) is a connect or read timeout."""
    while True:
        if isinstance(error, NewConnectionError):  # a subclass of ConnectTimeoutError
            return False
        if isinstance(error, (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError)):
            return True
        inner = getattr(error, "reason", None)
        if isinstance(error, MaxRetryError) and isinstance(inner, BaseException):
            error = inner
            continue
        wrapped = error.args[0] if error.args and isinstance(error.args[0], BaseException) else None
        if wrapped is None:
            return False
        error = wrapped


def reason(error: BaseException) -> str:
    """A short, human reason for a network failure."""
    text = str(error)
    untrusted = re.search(r"certificate verify failed: ([^(')]+)", text)
    if untrusted:
        return f"certificate verify failed: {untrusted.group(1).strip()}"
    for needle, said in (
        ("Connection refused", "connection refused"),
        ("Connection reset", "connection reset"),
        ("Name or service not known", "host name does not resolve"),
        ("Temporary failure in name resolution", "host name does not resolve"),
        ("No route to host", "no route to host"),
        ("Network is unreachable", "network is unreachable"),
        ("IncompleteRead", "connection closed mid-transfer"),
    ):
        if needle in text:
            return said
    if is_timeout(error):
        return "timed out"
    return text.splitlines()[0][:200] if text else type(error).__name__


def unreachable(error: requests.RequestException, where: str, method: str, path: str,
                session: Session, ca_hint: str) -> OperationError:
    """One line for a request that never got an answer, once the retries are spent."""
    if isinstance(error, requests.exceptions.SSLError):
        return OperationError(f"cannot reach {where}: TLS verification failed ({reason(error)});"
                              f" {ca_hint}")
    if is_timeout(error):
        connect, read = timeouts.resolve(session.timeout)
        return OperationError(
            f"cannot reach {where}: no answer to {method} {path} within the timeouts"
            f" ({connect:g} s connect, {read:g} s read), tried {timeouts.TIMEOUT_RETRIES + 1}"
            " times; --connect-timeout/--read-timeout to change")
    return OperationError(f"cannot reach {where}: {reason(error)}")


def attempts(response: requests.Response) -> int:
    """How many times the request behind ``response`` was sent."""
    retries = getattr(response.raw, "retries", None)
    return len(retries.history) + 1 if retries is not None else 1


# -- the one resumable download ------------------------------------------------------------


class Interrupted(Exception):
    """A transfer broke after ``got`` bytes; the partial file keeps them."""

    def __init__(self, why: str, got: int) -> None:
        super().__init__(why)
        self.why = why
        self.got = got


@dataclass(frozen=True)
class Downloaded:
    """A finished, verified partial file: its sha256 (hex) and the bytes that crossed the network."""

    sha256: str
    fetched: int


def download(
    get: Callable[[dict[str, str]], requests.Response],
    partial: Path,
    *,
    checksum: tuple[str, str],
    size: int | None,
    what: str,
    session: Session,
    refuse: Callable[[requests.Response], Exception],
    mismatch: Callable[[str], Exception],
    progress: Progress | None = None,
) -> Downloaded:
    """Fill ``partial`` with the bytes ``get(headers)`` answers until they match ``checksum``.

    ``get`` sends one GET with the given headers (``Range`` when resuming); ``refuse`` makes
    the error for an answer that is neither 200 nor a usable 206; ``mismatch(got_hex)`` the
    error for bytes that do not match. A transfer that breaks is resumed from what arrived,
    up to the session's retries with backoff; a resumed file that ends wrong gets one clean
    try (the old bytes may be stale). A disk error names the cache file and is not retried.
    """
    algorithm, expected = checksum
    fetched = failures = 0
    fresh_retry_used = False
    while True:
        offset = partial.stat().st_size if partial.exists() else 0
        if size is not None and offset > size:
            partial.unlink()
            offset = 0
        resumed = offset > 0
        hashers = _hashers(algorithm)
        if offset:
            with open(partial, "rb") as handle:
                for chunk in iter(lambda: handle.read(CHUNK), b""):
                    for hasher in hashers:
                        hasher.update(chunk)
        if size is None or offset < size:
            try:
                offset, got, hashers = _stream(get, partial, offset, hashers, algorithm, size,
                                               what, refuse, progress)
                fetched += got
            except Interrupted as interrupted:
                fetched += interrupted.got
                failures += 1
                if failures > session.retries:
                    raise OperationError(f"{what}: download kept failing ({interrupted.why});"
                                         " run again to resume") from None
                session.backoff_sleep(backoff_delay(session.backoff, failures - 1))
                continue
        got_hex = hashers[-1].hexdigest()
        if (size is not None and offset != size) or got_hex != expected:
            partial.unlink(missing_ok=True)
            if resumed and not fresh_retry_used:
                fresh_retry_used = True
                continue
            raise mismatch(got_hex)
        return Downloaded(sha256=hashers[0].hexdigest(), fetched=fetched)


def _hashers(algorithm: str) -> list[Any]:
    """sha256 first (what the store is keyed by), the checksum's own algorithm last."""
    return [hashlib.sha256()] if algorithm == "sha256" else [hashlib.sha256(), hashlib.new(algorithm)]


def _stream(get: Callable[[dict[str, str]], requests.Response], partial: Path, offset: int,
            hashers: list[Any], algorithm: str, size: int | None, what: str,
            refuse: Callable[[requests.Response], Exception], progress: Progress | None
            ) -> tuple[int, int, list[Any]]:
    """One GET (with Range when resuming) appended to ``partial``: (bytes in the file, bytes
    received, the hashers over the whole file). Raises Interrupted when the transfer breaks,
    after keeping what arrived."""
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    response = get(headers)
    got = 0
    try:
        status = response.status_code
        if status == 206 and offset and _range_start(response) == offset:
            mode = "ab"
        elif status == 200:
            mode, offset = "wb", 0  # the server ignored Range: start again from byte 0
            hashers = _hashers(algorithm)
        elif status in (206, 416):
            partial.unlink(missing_ok=True)  # an unusable range answer: start over
            raise Interrupted(f"HTTP {status} to a Range request", 0)
        else:
            raise refuse(response)
        try:
            out = open(partial, mode)  # noqa: SIM115 - closed below
        except OSError as error:
            raise os_error(error, "cache file", partial) from None
        try:
            for chunk in response.raw.stream(CHUNK, decode_content=False):
                if size is not None and offset + len(chunk) > size:
                    out.close()
                    partial.unlink(missing_ok=True)
                    raise OperationError(f"{what} is larger than the {size} bytes expected;"
                                         " refused")
                try:
                    out.write(chunk)
                except OSError as error:  # the disk, never a network fault to retry
                    raise os_error(error, "cache file", partial) from None
                for hasher in hashers:
                    hasher.update(chunk)
                offset += len(chunk)
                got += len(chunk)
                if progress is not None:
                    progress(len(chunk))
        except STREAM_ERRORS as error:
            raise Interrupted(reason(error), got) from None
        finally:
            try:
                out.close()
            except OSError as error:
                raise os_error(error, "cache file", partial) from None
        if size is not None and offset < size:
            raise Interrupted("connection closed mid-transfer", got)
        return offset, got, hashers
    finally:
        response.close()


def _range_start(response: requests.Response) -> int | None:
    value = response.headers.get("Content-Range", "")
    if not value.startswith("bytes "):
        return None
    try:
        return int(value[len("bytes "):].split("-", 1)[0])
    except ValueError:
        return None
