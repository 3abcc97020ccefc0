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

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

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
    refs = [ImageReference.parse(name) for name in names]
    lock = threading.Lock()
    claimed: set[str] = set()
    fetches: list[Future[int]] = []
    counts = {"missing": 0, "cached": 0}

    def on_bytes(n: int) -> None:
        if progress:
            progress(n, counts["missing"])

    waits = ThreadPoolExecutor(max_workers=workers * transport.ROUND_TRIP_LANE)
    bulk = ThreadPoolExecutor(max_workers=workers)

    def resolve(ref: ImageReference) -> Any:
        image = source.resolve(ref, arch=arch, store=store)
        with lock:
            for blob in image.blobs:
                if blob.digest in claimed:
                    continue
                claimed.add(blob.digest)
                if blob.digest in image.fetched_blobs:  # read while resolving: downloaded
                    continue
                if store.has(blob.digest):
                    counts["cached"] += blob.size
                else:
                    counts["missing"] += blob.size
                    pool = waits if blob.size < transport.SMALL_BODY else bulk
                    fetches.append(pool.submit(source.fetch_blob, ref, blob, store, on_bytes))
        return image

    with waits, bulk:
        resolved = list(waits.map(resolve, refs))
        fetched = [fetch.result() for fetch in fetches]  # complete: every resolve has run
    during_resolve_bytes = sum(image.fetched_bytes for image in resolved)
    return PulledImages(images=list(zip(refs, resolved)), downloaded=sum(fetched) + during_resolve_bytes,
                        cached=counts["cached"])


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


def layout_content(pulled: PulledImages, store: BlobStore) -> Content:
    """The images as one OCI image layout under ``images/``: members and metadata.

    ``index.json`` points straight at single-platform manifests, so containerd imports
    exactly the platform the bundle was built for, under the upstream names.
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
        for digest in [image.digest] + [blob.digest for blob in image.blobs]:
            if digest not in seen:
                seen.add(digest)
                members.append(_store_member(store, layout.blob_path(digest), digest))
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
