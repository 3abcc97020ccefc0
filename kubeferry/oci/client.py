"""A daemonless registry client: resolve, pull into the blob store, and push.

Why not oras-py's provider: it lets requests follow redirects, has no timeouts, retries
only on exceptions and HTTP 500 with fixed sleeps (not 429/503, no Retry-After), writes
blobs without checking size or digest, and cannot resume. This client:

- follows redirects by hand (registry.k8s.io answers every /v2/ call with 307) and sends
  an Authorization header only to the origin that challenged for it;
- sends everything through ``kubeferry.transport``: its session (retries of 429, 5xx,
  resets, refusals and timeouts with bounded backoff, Retry-After honoured) and its one
  resumable download into the store's partial file, hashed as it streams, published only
  when size and digest match.

``endpoints`` maps an upstream registry name to the URL its bytes come from, so
``--mirror registry.k8s.io=http://127.0.0.1:5000`` keeps upstream names in the bundle.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Union
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests

from kubeferry import timeouts, transport
from kubeferry.errors import InputError, OperationError
from kubeferry.oci import mediatypes
from kubeferry.oci.auth import Authorizer, Credentials
from kubeferry.oci.descriptor import Descriptor
from kubeferry.oci.reference import DIGEST_RE, ImageReference
from kubeferry.oci.store import BlobSource, BlobStore, digest_of, hex_of

Progress = Callable[[int], None]
Body = Union[bytes, Callable[[], BinaryIO], None]

REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
MAX_MANIFEST_BYTES = 4 << 20  # distribution refuses larger manifests too
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass
class ResolvedImage:
    """One single-platform image as resolved from a registry, with every digest recorded."""

    reference: ImageReference
    index_digest: str | None
    index_media_type: str | None
    manifest_digest: str
    manifest_media_type: str
    manifest: bytes
    config: Descriptor
    layers: list[Descriptor]
    platform: dict
    index: bytes | None = None
    # What resolve() itself downloaded: manifest/index/config bytes and the blob digests.
    fetched_bytes: int = field(default=0, compare=False)
    fetched_blobs: tuple[str, ...] = field(default=(), compare=False)

    @property
    def blobs(self) -> list[Descriptor]:
        """The config and the layers: every blob the manifest needs."""
        return [self.config, *self.layers]

    @property
    def pinned(self) -> ImageReference:
        """The reference pinned to the single-platform manifest digest."""
        return self.reference.with_digest(self.manifest_digest)


@dataclass
class PullResult:
    image: ResolvedImage
    bytes_downloaded: int
    bytes_cached: int


def _origin(url: str) -> str:
    """``scheme://host:port`` with the default port made explicit: what auth is keyed on."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    return f"{scheme}://{(parts.hostname or '').lower()}:{port}"


def _with_params(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def _tag_key(ref: ImageReference) -> str:
    """The cache's index key for what the tag of ``ref`` (its upstream name) pointed at."""
    return "tag:" + hashlib.sha256(str(ref).encode()).hexdigest()


def _media_type_of(data: dict, fallback: str | None) -> str:
    declared = data.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if fallback:
        return fallback
    if data.get("schemaVersion") == 1:
        return mediatypes.DOCKER_SCHEMA1
    return mediatypes.OCI_INDEX if "manifests" in data else mediatypes.OCI_MANIFEST


def _wanted_platform(os_name: str, arch: str) -> tuple[str, str, tuple[str, ...]]:
    """(os, architecture, acceptable variants); an empty variant tuple accepts any."""
    arch, _, variant = arch.partition("/")
    if variant:
        return os_name, arch, (variant,)
    if arch == "arm64":
        return os_name, arch, ("v8", "")
    return os_name, arch, ()


def _platform_text(platform: dict) -> str:
    text = f"{platform.get('os', '?')}/{platform.get('architecture', '?')}"
    return text + (f"/{platform['variant']}" if platform.get("variant") else "")


class RegistryClient:
    """Talks the OCI distribution API to registries, mirrors and Harbor."""

    def __init__(
        self,
        endpoints: dict[str, str] | None = None,
        credentials: Credentials | None = None,
        ca_file: str | None = None,
        timeout: float | tuple[float, float] | None = None,  # None: kubeferry.timeouts' values
        max_retries: int = transport.RETRIES,
        backoff: float = transport.BACKOFF,
        allow_plain_http_credentials: bool = False,
        jobs: int = 4,
    ) -> None:
        self._endpoints: dict[str, str] = {}
        for registry, url in (endpoints or {}).items():
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise InputError(
                    f"endpoint {url!r} for {registry} must be an http:// or https:// URL"
                )
            self._endpoints[registry] = url.rstrip("/")
        self.session = transport.session(jobs=jobs, ca_files=(ca_file,), retries=max_retries,
                                         backoff=backoff, timeout=timeout)
        self.authorizer = Authorizer(credentials, self._send, allow_plain_http_credentials)

    @property
    def sleep(self) -> Callable[[float], None]:
        """Every wait between tries (replaceable, to observe backoff)."""
        return self.session.sleep

    @sleep.setter
    def sleep(self, function: Callable[[float], None]) -> None:
        self.session.sleep = function

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- endpoints and errors -------------------------------------------------------------

    def endpoint(self, registry: str) -> str:
        """The API base URL for an upstream registry name."""
        if registry in self._endpoints:
            return self._endpoints[registry]
        if registry == "docker.io":
            return "https://registry-1.docker.io"
        return f"https://{registry}"

    def _where(self, registry: str) -> str:
        url = self.endpoint(registry)
        return registry if url == f"https://{registry}" else f"{registry} at {url}"

    def _fail(self, response: requests.Response, what: str, registry: str) -> OperationError:
        """An error for an unexpected response, naming the thing and the registry."""
        status = response.status_code
        detail = ""
        try:
            errors = json.loads(response.content[:65536]).get("errors") or []
            detail = f": {errors[0].get('message') or errors[0].get('code')}" if errors else ""
        except (ValueError, AttributeError, TypeError, IndexError, OSError):
            detail = ""
        where = self._where(registry)
        if status == 401:
            return OperationError(
                f"{what}: access denied by {where} (HTTP 401{detail}); "
                "check the credentials in --registry-auth FILE"
            )
        if status == 403:
            return OperationError(f"{what}: forbidden by {where} (HTTP 403{detail})")
        if status == 404:
            return OperationError(f"{what}: not found at {where} (HTTP 404{detail})")
        return OperationError(f"{what}: {where} answered HTTP {status}{detail}")

    # -- transport --------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        params: Any = None,
        data: Body = None,
        stream: bool = False,
        where: str | None = None,
    ) -> requests.Response:
        """One HTTP exchange without redirects; the session retries 429/5xx and network failures."""
        where = where or urlsplit(url).netloc
        path = urlsplit(url).path
        body = transport.Rewindable(data) if callable(data) else data
        try:
            with timeouts.waiting(f"{where} to answer {method} {path}",
                                  timeouts.resolve(self.session.timeout)[1]):
                response = self.session.request(method, url, headers=headers, params=params,
                                                data=body, stream=stream, allow_redirects=False)
        except requests.RequestException as error:
            raise transport.unreachable(error, where, method, path, self.session,
                                        "pass the registry's CA certificate") from None
        finally:
            if isinstance(body, transport.Rewindable):
                body.close()
        if response.status_code in transport.RETRY_STATUSES:  # the session's retries are spent
            response.close()
            raise OperationError(
                f"{where} answered HTTP {response.status_code} to {method} {path}"
                f" {transport.attempts(response)} times; try again later"
            )
        return response

    def _request(
        self,
        registry: str,
        method: str,
        url: str,
        *,
        scopes: list[str],
        headers: dict[str, str] | None = None,
        params: Any = None,
        data: Body = None,
        stream: bool = False,
    ) -> requests.Response:
        """A registry API call: endpoint mapping, auth challenges, redirects by hand."""
        base = self.endpoint(registry)
        own_origin = _origin(base)
        login_host = urlsplit(base).netloc
        where = self._where(registry)
        if not url.startswith(("http://", "https://")):
            url = base + url
        hops = 0
        answered: set[str] = set()
        while True:
            origin = _origin(url)
            own = origin == own_origin
            sent = dict(headers or {})
            authorization = self.authorizer.header(origin, login_host, own, scopes)
            if authorization:
                sent["Authorization"] = authorization
            try:
                response = self._send(
                    method, url, headers=sent, params=params, data=data, stream=stream, where=where
                )
                status = response.status_code
                if status == 401 and origin not in answered:
                    answered.add(origin)
                    response.close()
                    self.authorizer.answer(origin, login_host, own, scopes, response)
                    continue
            finally:
                self.authorizer.probed(origin)
            if status in REDIRECTS:
                location = response.headers.get("Location")
                response.close()
                if not location:
                    raise OperationError(f"{where} sent HTTP {status} without a Location")
                if hops >= MAX_REDIRECTS:
                    raise OperationError(f"{where}: more than {MAX_REDIRECTS} redirects")
                url = urljoin(response.url or url, location)
                params = None  # the Location carries its own query
                hops += 1
                if status == 303:
                    method, data = "GET", None
                continue
            return response

    # -- pull ---------------------------------------------------------------------------------

    @staticmethod
    def _pull_scope(ref: ImageReference) -> list[str]:
        return [f"repository:{ref.repository}:pull"]

    @staticmethod
    def _push_scope(ref: ImageReference) -> list[str]:
        return [f"repository:{ref.repository}:pull,push"]

    def _head_manifest(self, ref: ImageReference) -> tuple[str, str | None] | None:
        """(digest, media type) of a tag, or None if the registry does not say."""
        response = self._request(
            ref.registry,
            "HEAD",
            f"/v2/{ref.repository}/manifests/{ref.reference}",
            scopes=self._pull_scope(ref),
            headers={"Accept": mediatypes.ACCEPT},
        )
        response.close()
        if response.status_code != 200:
            return None
        digest = response.headers.get("Docker-Content-Digest", "")
        if not DIGEST_RE.match(digest):
            return None
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return digest, content_type or None

    def _get_manifest(
        self, ref: ImageReference, reference: str, expected: str | None
    ) -> tuple[bytes, str | None, str]:
        """GET a manifest and verify it: against ``expected``, else Docker-Content-Digest."""
        what = f"manifest {reference} of {ref}"
        response = self._request(
            ref.registry,
            "GET",
            f"/v2/{ref.repository}/manifests/{reference}",
            scopes=self._pull_scope(ref),
            headers={"Accept": mediatypes.ACCEPT},
            stream=True,
        )
        try:
            if response.status_code != 200:
                raise self._fail(response, what, ref.registry)
            data = response.raw.read(MAX_MANIFEST_BYTES + 1, decode_content=True)
        except transport.STREAM_ERRORS as error:
            raise OperationError(f"{what}: download failed: {transport.reason(error)}") from None
        finally:
            response.close()
        if len(data) > MAX_MANIFEST_BYTES:
            raise OperationError(f"{what} is larger than {MAX_MANIFEST_BYTES} bytes; refused")
        actual = digest_of(data)
        if expected is not None and actual != expected:
            raise OperationError(
                f"manifest {expected} of {ref} does not match its digest (got {actual})"
            )
        announced = response.headers.get("Docker-Content-Digest", "")
        if expected is None and announced.startswith("sha256:") and announced != actual:
            raise OperationError(
                f"manifest of {ref} does not match the registry's digest {announced} "
                f"(got {actual})"
            )
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return data, content_type or None, actual

    def _manifest_bytes(
        self,
        ref: ImageReference,
        reference: str,
        expected: str | None,
        store: BlobStore | None,
        fetched: list[int],
    ) -> tuple[bytes, str | None, str]:
        """A manifest from the store when its digest is known and present, else the registry.

        A tag this cache has seen before is HEADed first (a warm rebuild then downloads
        nothing, and a HEAD does not count against Docker Hub's pull limit); a tag it has
        never seen is fetched at once, one round trip instead of two. The cache remembers
        which manifest each tag named last (its index, ``tag:<sha256 of the name>``).
        """
        media_type = None
        remembered = None
        if store is not None and expected is None:
            remembered = _tag_key(ref)
            if store.find(remembered) is not None:
                head = self._head_manifest(ref)
                if head is not None:
                    expected, media_type = head
        if store is not None and expected is not None and store.has(expected):
            if remembered is not None:
                store.alias(remembered, expected)
            return store.get_bytes(expected), media_type, expected
        # by digest when HEAD named one: a tag moved in between cannot mix two manifests
        data, got_type, digest = self._get_manifest(ref, expected or reference, expected)
        fetched[0] += len(data)
        if store is not None:
            store.put_bytes(data, digest)
            if remembered is not None:
                store.alias(remembered, digest)
        return data, got_type or media_type, digest

    def resolve(
        self,
        ref: ImageReference,
        arch: str = "amd64",
        os: str = "linux",
        store: BlobStore | None = None,
    ) -> ResolvedImage:
        """Resolve ``ref`` to its single-platform manifest for ``os``/``arch``.

        With a ``store``, a tag is HEADed first and manifests already stored are not
        downloaded again (a warm rebuild transfers nothing); fetched manifests are stored.
        """
        fetched = [0]
        data, media_type, digest = self._manifest_bytes(
            ref, ref.reference, ref.digest, store, fetched
        )
        document = self._parse(data, f"manifest of {ref}")
        media_type = _media_type_of(document, media_type)
        self._refuse_schema1(ref, media_type, document)
        index_digest = index_media_type = index_bytes = None
        platform: dict | None = None
        if media_type in mediatypes.INDEX_TYPES:
            index_digest, index_media_type, index_bytes = digest, media_type, data
            child = self._pick_child(ref, document, os, arch)
            platform = dict(child.platform or {})
            data, _, digest = self._manifest_bytes(ref, child.digest, child.digest, store, fetched)
            document = self._parse(data, f"manifest {child.digest} of {ref}")
            media_type = _media_type_of(document, child.media_type)
            self._refuse_schema1(ref, media_type, document)
        if media_type not in mediatypes.MANIFEST_TYPES:
            raise OperationError(f"{ref}: unsupported manifest media type {media_type!r}")
        where = f"manifest {digest} of {ref}"
        config = Descriptor.from_dict(document.get("config"), where)
        layers_data = document.get("layers")
        if not isinstance(layers_data, list):
            raise OperationError(f"{where} has no layers list")
        layers = [Descriptor.from_dict(layer, where) for layer in layers_data]
        fetched_blobs: tuple[str, ...] = ()
        if platform is None:
            platform, config_fetched = self._config_platform(ref, config, store, fetched)
            if config_fetched:
                fetched_blobs = (config.digest,)
            wanted_os, wanted_arch, variants = _wanted_platform(os, arch)
            if platform and (
                platform.get("os") != wanted_os or platform.get("architecture") != wanted_arch
            ):
                raise OperationError(
                    f"{ref} is a single-platform image for {_platform_text(platform)}, "
                    f"not {wanted_os}/{arch}"
                )
        return ResolvedImage(
            reference=ref,
            index_digest=index_digest,
            index_media_type=index_media_type,
            manifest_digest=digest,
            manifest_media_type=media_type,
            manifest=data,
            config=config,
            layers=layers,
            platform=platform,
            index=index_bytes,
            fetched_bytes=fetched[0],
            fetched_blobs=fetched_blobs,
        )

    @staticmethod
    def _parse(data: bytes, where: str) -> dict:
        try:
            document = json.loads(data)
        except ValueError:
            raise OperationError(f"{where} is not valid JSON") from None
        if not isinstance(document, dict):
            raise OperationError(f"{where} is not a JSON object")
        return document

    @staticmethod
    def _refuse_schema1(ref: ImageReference, media_type: str, document: dict) -> None:
        if media_type in mediatypes.SCHEMA1_TYPES or document.get("schemaVersion") == 1:
            raise OperationError(
                f"{ref} is a Docker schema 1 manifest, which kubeferry does not read; "
                "push it again with a current docker or skopeo (schema 2 / OCI)"
            )

    @staticmethod
    def _pick_child(ref: ImageReference, index: dict, os_name: str, arch: str) -> Descriptor:
        """The index entry for the wanted platform, preferring an exact variant match."""
        wanted_os, wanted_arch, variants = _wanted_platform(os_name, arch)
        entries = index.get("manifests")
        if not isinstance(entries, list):
            raise OperationError(f"index of {ref} has no manifests list")
        children = [Descriptor.from_dict(entry, f"index of {ref}") for entry in entries]
        matches = []
        for child in children:
            platform = child.platform or {}
            if platform.get("os") != wanted_os or platform.get("architecture") != wanted_arch:
                continue
            variant = platform.get("variant") or ""
            if variants and variant not in variants:
                continue
            rank = variants.index(variant) if variants else 0
            matches.append((rank, child))
        if not matches:
            available = ", ".join(
                sorted({_platform_text(c.platform) for c in children if c.platform})
            )
            raise OperationError(
                f"{ref} has no {wanted_os}/{arch} image (it has: {available or 'none'})"
            )
        matches.sort(key=lambda item: item[0])
        return matches[0][1]

    def _config_platform(
        self,
        ref: ImageReference,
        config: Descriptor,
        store: BlobStore | None,
        fetched: list[int],
    ) -> tuple[dict, bool]:
        """The platform a single-platform image's config declares (it has no index to say)."""
        if store is not None:
            got = self.fetch_blob(ref, config, store)
            fetched[0] += got
            data = store.get_bytes(config.digest)
        else:
            data = self._blob_bytes(ref, config)
            fetched[0] += len(data)
            got = len(data)
        document = self._parse(data, f"config {config.digest} of {ref}")
        platform = {
            key: document[key]
            for key in ("os", "architecture", "variant")
            if isinstance(document.get(key), str) and document[key]
        }
        return platform, got > 0

    def _blob_bytes(self, ref: ImageReference, descriptor: Descriptor) -> bytes:
        """A small blob read into memory and verified (used without a store)."""
        what = f"blob {descriptor.digest} of {ref}"
        response = self._request(
            ref.registry,
            "GET",
            f"/v2/{ref.repository}/blobs/{descriptor.digest}",
            scopes=self._pull_scope(ref),
            stream=True,
        )
        try:
            if response.status_code != 200:
                raise self._fail(response, what, ref.registry)
            data = response.raw.read(descriptor.size + 1, decode_content=False)
        except transport.STREAM_ERRORS as error:
            raise OperationError(f"{what}: download failed: {transport.reason(error)}") from None
        finally:
            response.close()
        actual = digest_of(data)
        if len(data) != descriptor.size or actual != descriptor.digest:
            raise OperationError(f"{what} does not match its digest (got {actual})")
        return data

    def fetch_blob(
        self,
        ref: ImageReference,
        descriptor: Descriptor,
        store: BlobStore,
        progress: Progress | None = None,
    ) -> int:
        """Download one blob into the store; returns the bytes that crossed the network."""
        if store.has(descriptor.digest):
            return 0
        with store.lock(descriptor.digest):
            if store.has(descriptor.digest):
                return 0
            return self._download(ref, descriptor, store, progress)

    def _download(
        self,
        ref: ImageReference,
        descriptor: Descriptor,
        store: BlobStore,
        progress: Progress | None,
    ) -> int:
        digest = descriptor.digest
        what = f"blob {digest} of {ref}"

        def get(headers: dict[str, str]) -> requests.Response:
            return self._request(ref.registry, "GET", f"/v2/{ref.repository}/blobs/{digest}",
                                 scopes=self._pull_scope(ref), headers=headers, stream=True)

        def mismatch(got: str) -> OperationError:
            return OperationError(f"{what} does not match its digest (got sha256:{got})")

        done = transport.download(
            get, store.partial_path(digest), checksum=("sha256", hex_of(digest)),
            size=descriptor.size, what=what, session=self.session,
            refuse=lambda response: self._fail(response, what, ref.registry),
            mismatch=mismatch, progress=progress)
        store.commit_partial(digest, actual_digest=digest)
        return done.fetched

    def pull(
        self,
        ref: ImageReference,
        store: BlobStore,
        arch: str = "amd64",
        os: str = "linux",
        workers: int = 4,
        progress: Progress | None = None,
    ) -> PullResult:
        """Resolve ``ref`` and download its config and layers in parallel (bounded).

        ``progress`` gets byte counts as they arrive, from several threads at once.
        """
        image = self.resolve(ref, arch, os, store)
        unique = {blob.digest: blob for blob in image.blobs}
        cached = sum(
            blob.size
            for blob in unique.values()
            if blob.digest not in image.fetched_blobs and store.has(blob.digest)
        )
        missing = [blob for blob in unique.values() if not store.has(blob.digest)]
        downloaded = image.fetched_bytes
        if missing:
            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                futures = [
                    pool.submit(self.fetch_blob, ref, blob, store, progress) for blob in missing
                ]
                done, pending = wait(futures, return_when=FIRST_EXCEPTION)
                for future in pending:
                    future.cancel()
                for future in futures:
                    if future.done() and not future.cancelled() and future.exception():
                        raise future.exception()  # type: ignore[misc]
                downloaded += sum(future.result() for future in futures)
        return PullResult(image=image, bytes_downloaded=downloaded, bytes_cached=cached)

    # -- push -----------------------------------------------------------------------------

    def ping(self, registry: str) -> bool:
        """Check that ``registry`` speaks the v2 API and accepts our credentials."""
        response = self._request(registry, "GET", "/v2/", scopes=[])
        response.close()
        if response.status_code != 200:
            raise self._fail(response, "registry API check", registry)
        return True

    def challenge(self, registry: str) -> None:
        """Learn how ``registry`` authenticates (one anonymous ``GET /v2/``), unless known."""
        base = self.endpoint(registry)
        origin = _origin(base)
        if self.authorizer.knows(origin):
            return
        try:
            response = self._send("GET", base + "/v2/", where=self._where(registry))
            response.close()
            if response.status_code == 401:
                self.authorizer.learn(origin, urlsplit(base).netloc, response)
        finally:
            self.authorizer.probed(origin)

    def authorize(self, registry: str, repositories: list[str], push: bool = True) -> None:
        """Get tokens for many repositories at once (a few token requests, not one each)
        before working on them in parallel; nothing more where the registry has no tokens."""
        self.challenge(registry)
        base = self.endpoint(registry)
        action = "pull,push" if push else "pull"
        scopes = [f"repository:{repository}:{action}" for repository in dict.fromkeys(repositories)]
        self.authorizer.cover(_origin(base), urlsplit(base).netloc, scopes)

    def manifest_digest(self, ref: ImageReference) -> str | None:
        """The digest of what the registry holds under the ref's tag (one HEAD), or None."""
        head = self._head_manifest(ref)
        return head[0] if head else None

    def blob_exists(self, ref: ImageReference, digest: str) -> bool:
        response = self._request(
            ref.registry,
            "HEAD",
            f"/v2/{ref.repository}/blobs/{digest}",
            scopes=self._push_scope(ref),
        )
        response.close()
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise self._fail(response, f"blob {digest} of {ref.name}", ref.registry)

    def mount_blob(self, ref: ImageReference, digest: str, from_repository: str) -> bool:
        """Ask the registry to link a blob from another repository: True when mounted."""
        response = self._request(
            ref.registry,
            "POST",
            f"/v2/{ref.repository}/blobs/uploads/",
            scopes=[*self._push_scope(ref), f"repository:{from_repository}:pull"],
            params={"mount": digest, "from": from_repository},
            headers={"Content-Length": "0"},
        )
        response.close()
        if response.status_code == 201:
            return True
        if response.status_code == 202:
            location = response.headers.get("Location")
            if location:  # not mountable: drop the upload session it opened instead
                cancel = self._request(
                    ref.registry,
                    "DELETE",
                    urljoin(response.url, location),
                    scopes=self._push_scope(ref),
                )
                cancel.close()
            return False
        raise self._fail(response, f"mount of blob {digest} into {ref.name}", ref.registry)

    def push_blob(self, ref: ImageReference, descriptor: Descriptor, store: BlobSource,
                  check: bool = True) -> int:
        """Upload one blob (skipped when the registry has it); returns bytes sent.

        ``store`` is anything with ``size(digest)`` and ``open(digest)``: the blob store, or
        a bundle read in place (``kubeferry.bundle.images.BundleBlobs``). ``check=False``
        skips the HEAD for a caller that knows the blob is missing (a seed surveyed first).
        """
        digest = descriptor.digest
        if check and self.blob_exists(ref, digest):
            return 0
        what = f"upload of blob {digest} to {ref.name}"
        start = self._request(
            ref.registry,
            "POST",
            f"/v2/{ref.repository}/blobs/uploads/",
            scopes=self._push_scope(ref),
            headers={"Content-Length": "0"},
        )
        start.close()
        location = start.headers.get("Location")
        if start.status_code != 202 or not location:
            raise self._fail(start, what, ref.registry)
        size = store.size(digest)
        finish = self._request(
            ref.registry,
            "PUT",
            _with_params(urljoin(start.url, location), {"digest": digest}),
            scopes=self._push_scope(ref),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            data=lambda: store.open(digest),
        )
        finish.close()
        if finish.status_code != 201:
            raise self._fail(finish, what, ref.registry)
        return size

    def push_manifest(self, ref: ImageReference, data: bytes, media_type: str) -> str:
        """PUT a manifest under the ref's tag (or digest); returns its digest."""
        digest = digest_of(data)
        target = ref.tag or ref.digest or digest
        response = self._request(
            ref.registry,
            "PUT",
            f"/v2/{ref.repository}/manifests/{target}",
            scopes=self._push_scope(ref),
            headers={"Content-Type": media_type},
            data=data,
        )
        response.close()
        if response.status_code not in (200, 201):
            raise self._fail(response, f"push of manifest {digest} to {ref}", ref.registry)
        announced = response.headers.get("Docker-Content-Digest")
        if announced and announced.startswith("sha256:") and announced != digest:
            raise OperationError(
                f"{self._where(ref.registry)} stored manifest {digest} of {ref} "
                f"as {announced}; refused"
            )
        return digest

    def push_image(
        self,
        ref: ImageReference,
        image: ResolvedImage,
        store: BlobSource,
        mount_from: str | None = None,
    ) -> int:
        """Push a resolved single-platform image: blobs (mounted when possible), then manifest.

        Returns the blob bytes uploaded (0 when the registry had them all).
        """
        sent = 0
        for blob in {blob.digest: blob for blob in image.blobs}.values():
            if self.blob_exists(ref, blob.digest):
                continue
            if mount_from and self.mount_blob(ref, blob.digest, mount_from):
                continue
            sent += self.push_blob(ref, blob, store)
        self.push_manifest(ref, image.manifest, image.manifest_media_type)
        return sent
