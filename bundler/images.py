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
from kubeferry.oci.reference import ImageReference
from kubeferry.oci.store import BlobStore, Descriptor

OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


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
    cached = sum(blob.size for _, blob in wanted.values()) - total_missing
    on_bytes = (lambda n: progress(n, total_missing)) if progress else None
    with ThreadPoolExecutor(max_workers=workers) as pool:
        fetched = list(pool.map(
            lambda item: source.fetch_blob(item[0], item[1], store, on_bytes), missing))
    return PulledImages(images=list(zip(refs, resolved)), downloaded=sum(fetched), cached=cached)


def _index_entry(ref: ImageReference, image: Any) -> dict[str, Any]:
    """An index.json entry that ``ctr images import`` names after the full upstream name."""
    entry: dict[str, Any] = {
        "mediaType": image.manifest_media_type,
        "digest": image.manifest_digest,
        "size": len(image.manifest),
        "annotations": {CONTAINERD_NAME: str(ref), OCI_REF_NAME: str(ref)},
    }
    if image.platform:
        entry["platform"] = image.platform
    return entry


def layout_content(pulled: PulledImages, store: BlobStore) -> Content:
    """The images as one OCI image layout under ``images/``: members and metadata.

    ``index.json`` points straight at single-platform manifests, so containerd imports
    exactly the platform the bundle was built for, under the upstream names.
    """
    entries = [_index_entry(ref, image) for ref, image in pulled.images]
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries},
                       indent=1).encode()
    members = [
        _store_member(store, IMAGES_PREFIX + "oci-layout", store.put_bytes(OCI_LAYOUT)),
        _store_member(store, IMAGES_PREFIX + "index.json", store.put_bytes(index)),
    ]
    seen: set[str] = set()
    for _, image in pulled.images:
        digests = [image.manifest_digest] + [blob.digest for blob in image.blobs]
        for digest in digests:
            if digest not in seen:
                seen.add(digest)
                members.append(_store_member(store, _blob_path(digest), digest))
    metadata = {"images": [_image_metadata(ref, image) for ref, image in pulled.images]}
    return Content(kind="images", members=members, metadata=metadata)


def _image_metadata(ref: ImageReference, image: Any) -> dict[str, Any]:
    return {
        "name": str(ref),
        "digest": image.manifest_digest,
        "mediaType": image.manifest_media_type,
        "indexDigest": image.index_digest,
        "platform": image.platform,
        "size": len(image.manifest) + sum(blob.size for blob in image.blobs),
        "layers": len(image.layers),
    }


def _blob_path(digest: str) -> str:
    algorithm, _, hex_digest = digest.partition(":")
    return f"{IMAGES_PREFIX}blobs/{algorithm}/{hex_digest}"


def _store_member(store: BlobStore, path: str, digest: str) -> Member:
    source = store.path(digest)
    return Member(path=path, source=source, size=source.stat().st_size,
                  sha256=digest.partition(":")[2])
