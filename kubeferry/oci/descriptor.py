"""The OCI content descriptor: what a manifest says about a blob it points at."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubeferry.errors import OperationError
from kubeferry.oci.reference import DIGEST_RE


@dataclass(frozen=True)
class Descriptor:
    """mediaType, digest and size of a blob, and for index entries its platform."""

    media_type: str
    digest: str
    size: int
    platform: dict | None = field(default=None, hash=False)
    annotations: dict = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """The descriptor in OCI JSON form (empty platform and annotations left out)."""
        data: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.platform:
            data["platform"] = dict(self.platform)
        if self.annotations:
            data["annotations"] = dict(self.annotations)
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str = "descriptor") -> Descriptor:
        """Read a descriptor from JSON, refusing anything a path or a size could be abused with.

        ``where`` names the document in the error (e.g. the image), since the digest ends up in
        file paths and the size bounds downloads.
        """
        if not isinstance(data, dict):
            raise OperationError(f"{where}: descriptor is not a JSON object")
        media_type, digest, size = data.get("mediaType"), data.get("digest"), data.get("size")
        if not isinstance(media_type, str) or not media_type:
            raise OperationError(f"{where}: descriptor has no mediaType")
        if not isinstance(digest, str) or not DIGEST_RE.match(digest):
            raise OperationError(f"{where}: descriptor digest {digest!r} is not sha256:<64 hex>")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise OperationError(f"{where}: descriptor {digest} has an invalid size {size!r}")
        platform = data.get("platform")
        annotations = data.get("annotations") or {}
        if platform is not None and not isinstance(platform, dict):
            raise OperationError(f"{where}: descriptor {digest} has an invalid platform")
        if not isinstance(annotations, dict):
            raise OperationError(f"{where}: descriptor {digest} has invalid annotations")
        return cls(media_type, digest, size, platform, dict(annotations))
