"""A bundle's images as pushable content, read in place: no extraction, every byte verified.

``BundleBlobs`` is a ``BlobSource`` (what ``RegistryClient.push_blob`` reads from) over the
bundle's ``images/blobs/sha256/<hex>`` members: each blob is read at its offset in the
bundle file, at most its listed size, hashed on the way, and a reader that reaches the end
of a blob whose bytes do not match its digest raises instead of finishing the upload.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import IO

from kubeferry.bundle_format import IMAGES_PREFIX
from kubeferry.bundle_reader import Bundle, CorruptBundle
from kubeferry.oci import mediatypes
from kubeferry.oci.descriptor import Descriptor
from kubeferry.oci.store import hex_of

BLOBS_PREFIX = IMAGES_PREFIX + "blobs/sha256/"
_MAX_SMALL_BLOB = 4 << 20


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

    def member_path(self, digest: str) -> str:
        return BLOBS_PREFIX + hex_of(digest)

    def has(self, digest: str) -> bool:
        return self.bundle.member(self.member_path(digest)) is not None

    def size(self, digest: str) -> int:
        member = self.bundle.member(self.member_path(digest))
        if member is None:
            raise CorruptBundle(f"{self.bundle.path}: blob {digest} is not in the bundle")
        return int(member["size"])

    def open(self, digest: str) -> IO[bytes]:
        """A reader of the blob's bytes that raises CorruptBundle if they are not ``digest``."""
        size = self.size(digest)
        return _VerifyingReader(self.bundle.open_member(self.member_path(digest)), size, digest,
                                str(self.bundle.path))

    def get_bytes(self, digest: str) -> bytes:
        """A small blob (manifest, config), read whole and verified."""
        if self.size(digest) > _MAX_SMALL_BLOB:
            raise CorruptBundle(f"{self.bundle.path}: blob {digest} is too large for a manifest")
        with self.open(digest) as reader:
            return reader.read()

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
            media_type = entry.get("mediaType") or document.get("mediaType") or mediatypes.OCI_MANIFEST
            if media_type not in mediatypes.MANIFEST_TYPES or not isinstance(document, dict):
                raise CorruptBundle(f"{where} is not a single-platform manifest ({media_type})")
            config = Descriptor.from_dict(document.get("config"), where)
            layers = tuple(Descriptor.from_dict(layer, where) for layer in document.get("layers") or [])
            for blob in (config, *layers):
                if not self.has(blob.digest):
                    raise CorruptBundle(f"{where} needs blob {blob.digest}, which is not in the bundle")
            images.append(BundleImage(entry["name"], digest, media_type, manifest, config, layers))
        return images


class _VerifyingReader:
    """Reads exactly ``size`` bytes from a member and checks them against ``digest`` at the end."""

    def __init__(self, handle: IO[bytes], size: int, digest: str, bundle: str) -> None:
        self._handle = handle
        self._remaining = size
        self._size = size
        self._digest = digest
        self._bundle = bundle
        self._hasher = hashlib.sha256()

    def __len__(self) -> int:  # lets requests send a Content-Length instead of chunks
        return self._size

    def read(self, amount: int = -1) -> bytes:
        if self._remaining <= 0:
            return b""
        wanted = self._remaining if amount is None or amount < 0 else min(amount, self._remaining)
        data = self._handle.read(wanted)
        if not data:
            raise CorruptBundle(f"{self._bundle}: truncated in blob {self._digest}")
        self._remaining -= len(data)
        self._hasher.update(data)
        if self._remaining == 0:
            actual = "sha256:" + self._hasher.hexdigest()
            if actual != self._digest:
                raise CorruptBundle(
                    f"{self._bundle}: blob {self._digest} does not match its digest (got {actual});"
                    " the bundle is corrupt or was tampered with"
                )
        return data

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> _VerifyingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

