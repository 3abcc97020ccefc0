"""The images part of a build: pull every image of the release into the cache, lay them out.

Two passes: resolve every image (manifests only, in parallel), then fetch each unique
blob once (in parallel, bounded). Layers shared between images are fetched and stored
once; a blob already in the cache is not fetched at all.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

from kubeferry.bundle_format import CONTAINERD_NAME, IMAGES_PREFIX, OCI_REF_NAME
from kubeferry.bundler.content import Content, Member
from kubeferry.oci import mediatypes
from kubeferry.oci.convert import docker_to_oci
from kubeferry.oci.reference import ImageReference
from kubeferry.oci.store import BlobStore, Descriptor

OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


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

    ``progress(done_bytes, total_bytes)``-style callers get ``(n, total)``: bytes just
    fetched and the total of the blobs that were missing.
    """
    refs = [ImageReference.parse(name) for name in names]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        resolved = list(pool.map(lambda ref: source.resolve(ref, arch=arch, store=store), refs))
    wanted: dict[str, tuple[ImageReference, Descriptor]] = {}
    for ref, image in zip(refs, resolved):
        for blob in image.blobs:
            wanted.setdefault(blob.digest, (ref, blob))
    missing = [(ref, blob) for ref, blob in wanted.values() if not store.has(blob.digest)]
    total_missing = sum(blob.size for _, blob in missing)
    # resolve() may have fetched small blobs (configs, to read a platform): not cache hits
    during_resolve = {digest for image in resolved for digest in image.fetched_blobs}
    cached = sum(blob.size for digest, (_, blob) in wanted.items()
                 if digest not in during_resolve) - total_missing
    on_bytes = (lambda n: progress(n, total_missing)) if progress else None
    with ThreadPoolExecutor(max_workers=workers) as pool:
        fetched = list(pool.map(
            lambda item: source.fetch_blob(item[0], item[1], store, on_bytes), missing))
    during_resolve_bytes = sum(image.fetched_bytes for image in resolved)
    return PulledImages(images=list(zip(refs, resolved)), downloaded=sum(fetched) + during_resolve_bytes,
                        cached=cached)


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


def _index_entry(image: BundledImage) -> dict[str, Any]:
    """An index.json entry that ``ctr images import`` names after the full upstream name."""
    entry: dict[str, Any] = {
        "mediaType": mediatypes.OCI_MANIFEST,
        "digest": image.digest,
        "size": len(image.manifest),
        "annotations": {CONTAINERD_NAME: image.name, OCI_REF_NAME: image.name},
    }
    if image.platform:
        entry["platform"] = image.platform
    return entry


def layout_content(pulled: PulledImages, store: BlobStore) -> Content:
    """The images as one OCI image layout under ``images/``: members and metadata.

    ``index.json`` points straight at single-platform manifests, so containerd imports
    exactly the platform the bundle was built for, under the upstream names.
    """
    images = [bundled_image(ref, image, store) for ref, image in pulled.images]
    index = json.dumps({"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX,
                        "manifests": [_index_entry(image) for image in images]}, indent=1).encode()
    members = [
        _store_member(store, IMAGES_PREFIX + "oci-layout", store.put_bytes(OCI_LAYOUT)),
        _store_member(store, IMAGES_PREFIX + "index.json", store.put_bytes(index)),
    ]
    seen: set[str] = set()
    for image in images:
        for digest in [image.digest] + [blob.digest for blob in image.blobs]:
            if digest not in seen:
                seen.add(digest)
                members.append(_store_member(store, _blob_path(digest), digest))
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


def _blob_path(digest: str) -> str:
    algorithm, _, hex_digest = digest.partition(":")
    return f"{IMAGES_PREFIX}blobs/{algorithm}/{hex_digest}"


def _store_member(store: BlobStore, path: str, digest: str) -> Member:
    source = store.path(digest)
    return Member(path=path, source=source, size=source.stat().st_size,
                  sha256=digest.partition(":")[2])
