"""A bundle's images as pushable content, read in place: no extraction, every byte verified.

``BundleBlobs`` is a ``BlobSource`` (what ``RegistryClient.push_blob`` reads from) over the
bundle's ``images/blobs/sha256/<hex>`` members: each blob is read at its offset in the
bundle file, at most its listed size, hashed on the way, and a reader that reaches the end
of a blob whose bytes do not match its digest raises instead of finishing the upload.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from kubeferry.bundle.errors import CorruptBundle
from kubeferry.bundle.layout import blob_path, manifest_media_type
from kubeferry.bundle.reader import Bundle, VerifiedMember
from kubeferry.oci import mediatypes
from kubeferry.oci.descriptor import Descriptor


@dataclass(frozen=True)
class BundleImage:
    """One image of the bundle: its upstream name and its single-platform manifest."""

    name: str  # registry.k8s.io/kube-apiserver:v1.25.0
    manifest_digest: str
    media_type: str
    manifest: bytes
    config: Descriptor
    layers: tuple[Descriptor, ...]

    @property
    def blobs(self) -> list[Descriptor]:
        """The config and the layers (each once)."""
        unique = {blob.digest: blob for blob in (self.config, *self.layers)}
        return list(unique.values())


class BundleBlobs:
    """The bundle's image blobs by digest, for pushing straight out of the bundle file."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle

    def has(self, digest: str) -> bool:
        return self.bundle.member(blob_path(digest)) is not None

    def size(self, digest: str) -> int:
        member = self.bundle.member(blob_path(digest))
        if member is None:
            raise CorruptBundle(f"{self.bundle.path}: blob {digest} is not in the bundle")
        return int(member["size"])

    def open(self, digest: str) -> VerifiedMember:
        """A reader of the blob's bytes that raises CorruptBundle if they are not ``digest``."""
        self.size(digest)
        return self.bundle.open_verified(blob_path(digest), what=f"blob {digest}")

    def get_bytes(self, digest: str) -> bytes:
        """A small blob (manifest, config), read whole and verified."""
        self.size(digest)
        return self.bundle.read_member(blob_path(digest))

    def images(self) -> list[BundleImage]:
        """Every image the metadata lists, with its manifest read from the bundle."""
        self.bundle.verify_image_list()  # names are what Harbor gets: they must be the real ones
        images = []
        for entry in self.bundle.images:
            digest = entry["digest"]
            manifest = self.get_bytes(digest)
            where = f"{self.bundle.path}: manifest {digest} of {entry['name']}"
            try:
                document = json.loads(manifest)
            except ValueError:
                raise CorruptBundle(f"{where} is not JSON") from None
            if not isinstance(document, dict):
                raise CorruptBundle(f"{where} is not a manifest")
            media_type = manifest_media_type(entry.get("mediaType"), document)
            if media_type not in mediatypes.MANIFEST_TYPES:
                raise CorruptBundle(f"{where} is not a single-platform manifest ({media_type})")
            config = Descriptor.from_dict(document.get("config"), where)
            layers = tuple(Descriptor.from_dict(layer, where) for layer in document.get("layers") or [])
            for blob in (config, *layers):
                if not self.has(blob.digest):
                    raise CorruptBundle(f"{where} needs blob {blob.digest}, which is not in the bundle")
            images.append(BundleImage(entry["name"], digest, media_type, manifest, config, layers))
        return images
