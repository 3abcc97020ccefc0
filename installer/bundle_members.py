"""Small bundle members (GPG keys, image manifests) read on the admin host.

Read at their offsets in the bundle (never by walking the whole file) and checked against
their sha256 in the bundle metadata.
"""

from __future__ import annotations

import hashlib

from kubeferry.bundle_reader import Bundle, CorruptBundle
from kubeferry.errors import InputError

MAX_SMALL_MEMBER = 4 << 20


def read_member(bundle: Bundle, path: str) -> bytes:
    """The verified bytes of the small member ``path``."""
    entry = bundle.member(path)
    if entry is None:
        raise InputError(f"{bundle.path}: has no member {path}")
    if entry["size"] > MAX_SMALL_MEMBER:
        raise InputError(f"{bundle.path}: member {path} is too large to read in memory")
    with bundle.open_member(path) as handle:
        data = handle.read(entry["size"])
    if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise CorruptBundle(f"{bundle.path}: member {path} does not match its sha256 (corrupt or tampered)")
    return data
