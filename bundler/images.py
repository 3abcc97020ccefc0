"""The images part of a build: pull every image of the release into the cache, lay them out.

Two bounded pools share the work: requests that wait on a round trip rather than on
bandwidth (tag and manifest fetches, configs and other small blobs) run up to
``transport.ROUND_TRIP_LANE`` x ``--jobs`` at once, the large blobs ``--jobs`` at once.
Every image is resolved in parallel and each blob is queued as soon as its manifest is
known, so no download waits for the slowest tag to resolve (at a 200 ms round trip that
barrier cost seconds). Layers shared between images are fetched and stored once; a blob
already in the cache is not fetched at all.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Protocol, Sequence

from kubeferry import transport
from kubeferry.bundle import layout
from kubeferry.bundler.content import Content, Member
from kubeferry.oci import mediatypes
from kubeferry.oci.convert import docker_to_oci
from kubeferry.oci.reference import ImageReference
from kubeferry.oci.store import BlobStore, Descriptor


class ImageSource(Protocol):
    """Where image bytes come from: a registry (RegistryClient) or a local Docker Engine."""

    def resolve(self, ref: ImageReference, arch: str = ..., os: str = ...,
                store: BlobStore | None = ...) -> Any: ...

    def fetch_blob(self, ref: ImageReference, descriptor: Descriptor, store: BlobStore,
                   progress: Callable[[int], None] | None = ...) -> int: ...


@dataclass
class PulledImages:
    """Every image of a build, resolved and complete in the cache."""

    images: list[tuple[ImageReference, Any]]  # (upstream name, ResolvedImage)
    downloaded: int  # bytes fetched over the network
    cached: int  # bytes already in the cache

    def follower(self, digest: str) -> Callable[[], IO[bytes]] | None:
        """Every blob is in the cache already: read it there."""
        return None


class ImagePull:
    """A pull under way: every image resolved, the missing blobs still arriving.

    The bundle writer needs only the manifests to lay the images out and list them, so it
    starts writing at once and reads each blob while its download writes it (``follower``)
    instead of after the last download: at a long round trip the write then runs alongside
    the transfers rather than after them, and ends with the last byte. Use as a context
    manager: leaving it early (an error) cancels what has not started and waits for what has.
    """

    def __init__(self, names: Sequence[str], source: ImageSource, store: BlobStore, arch: str,
                 workers: int = 4, progress: Callable[[int, int], None] | None = None) -> None:
        self._refs = [ImageReference.parse(name) for name in names]
        self._source, self._store, self._arch = source, store, arch
        self._progress = progress
        self._lock = threading.Lock()
        self._fetches: dict[str, Future[int]] = {}
        self._resumed: set[str] = set()  # partial files from an earlier run: read once complete
        self._arrived = threading.Condition()  # bytes landed in a partial file, or a fetch ended
        self._counts = {"missing": 0, "cached": 0}
        self._waits = ThreadPoolExecutor(max_workers=workers * transport.ROUND_TRIP_LANE)
        self._bulk = RankedPool(workers)
        self.images: list[tuple[ImageReference, Any]] = []

    def __enter__(self) -> ImagePull:
        try:
            self.images = list(zip(self._refs, self._waits.map(self._resolve, self._refs)))
        except BaseException:
            self._stop(cancel=True)
            raise
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        self._stop(cancel=kind is not None)

    def _stop(self, cancel: bool) -> None:
        for pool in (self._waits, self._bulk):
            pool.shutdown(wait=True, cancel_futures=cancel)

    def _on_bytes(self, n: int) -> None:
        with self._arrived:
            self._arrived.notify_all()
        if self._progress:
            self._progress(n, self._counts["missing"])

    def _ended(self, _: Future[int]) -> None:
        with self._arrived:
            self._arrived.notify_all()

    def _resolve(self, ref: ImageReference) -> Any:
        image = self._source.resolve(ref, arch=self._arch, store=self._store)
        rank = self._refs.index(ref)
        with self._lock:
            for number, blob in enumerate(image.blobs):
                if blob.digest in self._fetches:
                    continue  # claimed by another image
                if blob.digest in image.fetched_blobs:  # read while resolving: downloaded
                    self._fetches[blob.digest] = _done(0)
                    continue
                if self._store.has(blob.digest):
                    self._counts["cached"] += blob.size
                    self._fetches[blob.digest] = _done(0)
                    continue
                self._counts["missing"] += blob.size
                if self._store.partial_path(blob.digest).exists():
                    self._resumed.add(blob.digest)
                fetch = (self._source.fetch_blob, ref, blob, self._store, self._on_bytes)
                future = (self._waits.submit(*fetch) if blob.size < transport.SMALL_BODY
                          else self._bulk.submit((rank, number), *fetch))
                future.add_done_callback(self._ended)
                self._fetches[blob.digest] = future
        return image

    def follower(self, digest: str) -> Callable[[], IO[bytes]] | None:
        """Opens a reader of blob ``digest`` while its download writes it; None if complete."""
        fetch = self._fetches.get(digest)
        if fetch is None or (fetch.done() and self._store.has(digest)):
            return None
        return functools.partial(ArrivingBlob, self._store, digest, fetch, self._arrived,
                                 partial=digest not in self._resumed)

    def finish(self) -> PulledImages:
        """Wait for every download; what was fetched and what the cache had."""
        fetched = sum(fetch.result() for fetch in list(self._fetches.values()))
        during_resolve = sum(image.fetched_bytes for _, image in self.images)
        return PulledImages(images=self.images, downloaded=fetched + during_resolve,
                            cached=self._counts["cached"])


class RankedPool:
    """``workers`` threads running what is submitted lowest rank first.

    The large blobs are fetched in the order the bundle file lists them (image, then blob),
    so the writer that follows the downloads seldom waits on a blob queued behind later
    ones: a plain pool runs them in the order the tags happened to resolve.
    """

    def __init__(self, workers: int) -> None:
        self._queue: list[tuple[Any, int, Future[Any], Callable[..., Any], tuple[Any, ...]]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"blob-{n}", daemon=True)
                         for n in range(max(1, workers))]
        for thread in self._threads:
            thread.start()

    def submit(self, rank: Any, call: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._changed:
            heapq.heappush(self._queue, (rank, next(self._order), future, call, args))
            self._changed.notify()
        return future

    def _work(self) -> None:
        while True:
            with self._changed:
                while not self._queue and not self._closed:
                    self._changed.wait()
                if not self._queue:
                    return
                _, _, future, call, args = heapq.heappop(self._queue)
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call(*args))
            except BaseException as error:  # noqa: BLE001 - handed to whoever waits on it
                future.set_exception(error)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """No more work; with ``cancel_futures`` what has not started never does."""
        with self._changed:
            self._closed = True
            if cancel_futures:
                for _, _, future, _, _ in self._queue:
                    future.cancel()
                self._queue.clear()
            self._changed.notify_all()
        if wait:
            for thread in self._threads:
                thread.join()


class ArrivingBlob:
    """Blob bytes read while their download appends them to the cache's partial file.

    ``read(n)`` returns n bytes (fewer only at the blob's end), waiting for them to land.
    Once the download has ended, what it raised is raised here, and reading goes on in the
    finished file of the store (the same bytes, whatever the partial file went through).
    The caller bounds the read by the blob's size and checks its sha256. A partial file left
    by an earlier run (``partial=False``) is not followed, only the finished file read: the
    download may find its old bytes wrong and fetch the blob again.
    """

    POLL = 0.1  # seconds between looks when no notice comes (another build fetching it)

    def __init__(self, store: BlobStore, digest: str, fetch: Future[int],
                 arrived: threading.Condition, partial: bool = True) -> None:
        self._store, self._digest, self._fetch, self._arrived = store, digest, fetch, arrived
        self._partial = partial
        self._handle: IO[bytes] | None = None
        self._offset = 0
        self._final = False  # reading the finished file in the store

    def __enter__(self) -> ArrivingBlob:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def read(self, size: int) -> bytes:
        first = self._read_some(size)
        if len(first) == size or not first:
            return first
        wanted = bytearray(first)
        while len(wanted) < size:
            chunk = self._read_some(size - len(wanted))
            if not chunk:
                break
            wanted += chunk
        return bytes(wanted)

    def _read_some(self, size: int) -> bytes:
        while True:
            if not self._final and self._fetch.done():
                self._fetch.result()  # what the download raised
                self.close()  # finished: go on in the store's file (the partial may have been redone)
                self._handle, self._final = self._open(self._store.path(self._digest)), True
            elif self._handle is None and self._partial:
                self._handle = self._open(self._store.partial_path(self._digest))
            if self._handle is not None and (chunk := self._handle.read(size)):
                self._offset += len(chunk)
                return chunk
            if self._final:
                return b""  # the finished file ends here: the caller reports it short
            with self._arrived:
                self._arrived.wait(self.POLL)

    def _open(self, path: Path) -> IO[bytes] | None:
        """``path`` at our offset, or None while it does not exist."""
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed by close()
        except FileNotFoundError:
            return None
        handle.seek(self._offset)
        return handle


def _done(result: int) -> Future[int]:
    future: Future[int] = Future()
    future.set_result(result)
    return future


def pull_images(
    names: Sequence[str],
    source: ImageSource,
    store: BlobStore,
    arch: str,
    workers: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> PulledImages:
    """Resolve ``names`` for ``arch`` and make every blob they need present in ``store``.

    ``progress(n, total)``: bytes just fetched, and the bytes of the missing blobs known
    so far (the total grows while manifests are still arriving).
    """
    with ImagePull(names, source, store, arch, workers, progress) as pull:
        return pull.finish()


@dataclass(frozen=True)
class BundledImage:
    """One image as the bundle stores it: an OCI manifest over the upstream blobs."""

    name: str  # the full upstream name
    digest: str  # of the manifest as stored in the bundle
    manifest: bytes
    blobs: tuple[Descriptor, ...]
    platform: dict[str, Any]
    upstream_digest: str  # of the single-platform manifest upstream
    index_digest: str | None  # of the upstream index or list it was picked from


def bundled_image(ref: ImageReference, image: Any, store: BlobStore) -> BundledImage:
    """``image`` as stored in a bundle; Docker schema2 manifests become OCI manifests."""
    manifest = image.manifest
    if image.manifest_media_type == mediatypes.DOCKER_MANIFEST:
        manifest = docker_to_oci(manifest)
    elif image.manifest_media_type != mediatypes.OCI_MANIFEST:
        raise ValueError(f"{ref}: unexpected manifest type {image.manifest_media_type}")
    return BundledImage(
        name=str(ref), digest=store.put_bytes(manifest), manifest=manifest,
        blobs=tuple(image.blobs), platform=dict(image.platform or {}),
        upstream_digest=image.manifest_digest, index_digest=image.index_digest,
    )


def layout_content(pulled: PulledImages | ImagePull, store: BlobStore) -> Content:
    """The images as one OCI image layout under ``images/``: members and metadata.

    ``index.json`` points straight at single-platform manifests, so containerd imports
    exactly the platform the bundle was built for, under the upstream names. A blob member
    of a pull still under way is read while its download writes it (``Member.follow``).
    """
    images = [bundled_image(ref, image, store) for ref, image in pulled.images]
    index = layout.index_json(layout.index_entry(image.name, image.digest, len(image.manifest),
                                                 image.platform) for image in images)
    members = [
        _store_member(store, layout.LAYOUT_MEMBER, store.put_bytes(layout.OCI_LAYOUT)),
        _store_member(store, layout.INDEX_MEMBER, store.put_bytes(index)),
    ]
    seen: set[str] = set()
    for image in images:
        if image.digest not in seen:
            seen.add(image.digest)
            members.append(_store_member(store, layout.blob_path(image.digest), image.digest))
        for blob in image.blobs:
            if blob.digest not in seen:
                seen.add(blob.digest)
                members.append(Member(path=layout.blob_path(blob.digest), source=store.path(blob.digest),
                                      size=blob.size, sha256=blob.digest.partition(":")[2],
                                      follow=pulled.follower(blob.digest)))
    return Content(kind="images", members=members,
                   metadata={"images": [_image_metadata(image) for image in images]})


def _image_metadata(image: BundledImage) -> dict[str, Any]:
    return {
        "name": image.name,
        "digest": image.digest,
        "upstreamDigest": image.upstream_digest,
        "indexDigest": image.index_digest,
        "platform": image.platform,
        "size": len(image.manifest) + sum(blob.size for blob in image.blobs),
        "layers": len(image.blobs) - 1,
    }


def _store_member(store: BlobStore, path: str, digest: str) -> Member:
    source = store.path(digest)
    return Member(path=path, source=source, size=source.stat().st_size,
                  sha256=digest.partition(":")[2])
