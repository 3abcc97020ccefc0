"""Docker schema2 -> OCI image manifest, as ``skopeo copy --format oci`` does it.

Why: an OCI image layout should index OCI manifests. containerd reads Docker-typed
entries too, but skopeo (1.9, Debian 12) skips them, so a bundle stores every image as
an OCI manifest. Only the manifest changes: config and layer bytes (and so their
digests) stay exactly as upstream published them.
"""

from __future__ import annotations

import json

from kubeferry.oci import mediatypes

_BLOB_TYPES = {
    mediatypes.DOCKER_CONFIG: mediatypes.OCI_CONFIG,
    mediatypes.DOCKER_LAYER_GZIP: mediatypes.OCI_LAYER_GZIP,
    mediatypes.DOCKER_LAYER: mediatypes.OCI_LAYER,
    mediatypes.DOCKER_FOREIGN_LAYER_GZIP: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
}


def docker_to_oci(manifest: bytes) -> bytes:
    """The OCI image manifest equivalent to a Docker schema2 manifest."""
    document = json.loads(manifest)
    converted = {"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST}
    converted["config"] = _convert_descriptor(document["config"])
    converted["layers"] = [_convert_descriptor(layer) for layer in document["layers"]]
    if document.get("annotations"):
        converted["annotations"] = document["annotations"]
    return json.dumps(converted, separators=(",", ":")).encode()


def _convert_descriptor(descriptor: dict) -> dict:
    converted = dict(descriptor)
    media_type = descriptor.get("mediaType", "")
    if media_type not in _BLOB_TYPES:
        raise ValueError(f"cannot convert a blob of media type {media_type!r} to OCI")
    converted["mediaType"] = _BLOB_TYPES[media_type]
    return converted
