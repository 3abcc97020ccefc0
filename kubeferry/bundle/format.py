"""The bundle file format's names and digests, shared by the writer and every reader.

A bundle is one uncompressed POSIX tar (pax headers). Its first member is
``kubeferry-bundle.json``, the metadata; every other member is a regular file listed
in the metadata's ``members`` with its size and sha256, in the order they follow.
``kubeferry.pyz`` (the admin kit) comes next, so tar reaches it at once; images live
under ``images/`` as one OCI image layout; packages, kernel and files under their own
prefixes. See docs/bundle-format.md.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from typing import Any, Iterable

FORMAT = "kubeferry-bundle"
FORMAT_VERSION = 1
METADATA_NAME = "kubeferry-bundle.json"
KIT_MEMBER = "kubeferry.pyz"  # the admin kit: kubeferry itself, right after the metadata
IMAGES_PREFIX = "images/"  # the OCI image layout (kubeferry.bundle.layout)
BUNDLE_SUFFIX = ".tar"
# The metadata's self-check: sha256 over the canonical metadata without this key.
SELF_CHECK = "metadataDigest"
DIGEST_RE = re.compile(r"^(sha256:)?([0-9a-f]{64})$")


def bundle_filename(kubernetes: str, os_name: str, arch: str) -> str:
    """``kubeferry-k8s-1.25.0-el7-amd64.tar``: the name says what is inside."""
    return f"kubeferry-k8s-{kubernetes}-{os_name}-{arch}{BUNDLE_SUFFIX}"


def unsafe_path_reason(path: str) -> str | None:
    """Why ``path`` may not be a bundle member (escapes the root, not canonical), or None."""
    if not path or "\\" in path or "\x00" in path:
        return "is not a plain relative path"
    if path.startswith("/"):
        return "is an absolute path"
    parts = path.split("/")
    if ".." in parts:
        return "climbs out of the bundle with '..'"
    if posixpath.normpath(path) != path or "." in parts or "" in parts:
        return "is not a canonical relative path"
    return None


def members_digest(members: Iterable[dict[str, Any]]) -> str:
    """The aggregate digest: sha256 over one ``<sha256> <size> <path>`` line per member, in order.

    It names the whole content of a bundle in one value an operator can compare.
    """
    digest = hashlib.sha256()
    for member in members:
        digest.update(f"{member['sha256']} {member['size']} {member['path']}\n".encode())
    return "sha256:" + digest.hexdigest()


def encode_metadata(metadata: dict[str, Any]) -> bytes:
    """The metadata member's bytes, exactly as the writer stores them."""
    return json.dumps(metadata, indent=1, sort_keys=False).encode() + b"\n"


def bundle_digest(raw_metadata: bytes) -> str:
    """The bundle digest: sha256 of the metadata member's exact bytes.

    The metadata lists every member with its sha256 and size, so this one value covers
    every byte of the bundle, metadata included. Build prints it last; verify and
    inspect print it; ``verify --digest D`` checks it.
    """
    return "sha256:" + hashlib.sha256(raw_metadata).hexdigest()


def metadata_self_check(metadata: dict[str, Any]) -> str:
    """sha256 over the canonical JSON of ``metadata`` without its ``metadataDigest``.

    Stored in the metadata at build, so a reader can refuse a metadata edited afterwards
    (a changed release, source or member) even without the bundle digest at hand.
    """
    body = {key: value for key, value in metadata.items() if key != SELF_CHECK}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def parse_digest(value: str, what: str = "--digest") -> str:
    """``sha256:<hex>`` from ``sha256:<hex>`` or a bare hex digest; ValueError naming ``what``."""
    match = DIGEST_RE.match(value.strip().lower())
    if not match:
        raise ValueError(f"{what} {value!r} is not a sha256 digest (sha256:<64 hex digits>)")
    return "sha256:" + match.group(2)
