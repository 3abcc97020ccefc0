"""The OCI image layout inside a bundle: ``images/oci-layout``, ``images/index.json`` and
``images/blobs/sha256/<hex>``, every image once.

``index.json`` points straight at single-platform manifests, each entry named by the
full upstream name in the annotations ``ctr images import`` and skopeo read. The builder
writes this layout, the installer writes a per-node subset of it, Harbor seeding and
``bundle images`` read it: all through these names.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from kubeferry.bundle.format import IMAGES_PREFIX
from kubeferry.oci import mediatypes
from kubeferry.oci.store import hex_of

LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
BLOBS_DIR = "blobs"
LAYOUT_MEMBER = IMAGES_PREFIX + LAYOUT_FILE
INDEX_MEMBER = IMAGES_PREFIX + INDEX_FILE
BLOBS_PREFIX = f"{IMAGES_PREFIX}{BLOBS_DIR}/sha256/"
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'

# Annotations on the index entries (what `ctr images import` names images by).
CONTAINERD_NAME = "io.containerd.image.name"
OCI_REF_NAME = "org.opencontainers.image.ref.name"


def blob_path(digest: str) -> str:
    """The bundle member holding blob ``digest``: ``images/blobs/sha256/<hex>``."""
    return BLOBS_PREFIX + hex_of(digest)


def index_entry(name: str, digest: str, size: int, platform: dict[str, Any] | None,
                media_type: str = mediatypes.OCI_MANIFEST) -> dict[str, Any]:
    """An index entry that ``ctr images import`` names after the full upstream ``name``."""
    entry: dict[str, Any] = {
        "mediaType": media_type,
        "digest": digest,
        "size": size,
        "annotations": {CONTAINERD_NAME: name, OCI_REF_NAME: name},
    }
    if platform:
        entry["platform"] = platform
    return entry


def index_json(entries: Iterable[dict[str, Any]]) -> bytes:
    """The ``index.json`` bytes listing ``entries``, as the bundle stores them."""
    return json.dumps({"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX,
                       "manifests": list(entries)}, indent=1).encode()


def index_names(index: bytes) -> list[tuple[str, str]]:
    """(name, manifest digest) of every entry of an ``index.json``, sorted."""
    return sorted((entry.get("annotations", {}).get(CONTAINERD_NAME, ""), entry["digest"])
                  for entry in json.loads(index).get("manifests", []))


def manifest_media_type(recorded: str | None, document: dict[str, Any]) -> str:
    """An image's manifest type: as the metadata records it, else as the manifest says,
    else OCI (the bundle stores every manifest as OCI)."""
    return recorded or document.get("mediaType") or mediatypes.OCI_MANIFEST


def manifest_blobs(manifest: bytes) -> list[str]:
    """The digests a single-platform manifest needs: its config, then its layers."""
    document = json.loads(manifest)
    return [document["config"]["digest"]] + [layer["digest"] for layer in document.get("layers") or []]
