"""Small bundle members (GPG keys, image manifests) read on the admin host.

Read at their offsets in the bundle (never by walking the whole file) and checked against
their sha256 in the bundle metadata.
"""

from __future__ import annotations

from kubeferry.bundle_reader import Bundle
from kubeferry.errors import InputError

MAX_SMALL_MEMBER = 4 << 20


def read_member(bundle: Bundle, path: str) -> bytes:
    """The verified bytes of the small member ``path`` (InputError if absent or too large)."""
    entry = bundle.member(path)
    if entry is None:
        raise InputError(f"{bundle.path}: has no member {path}")
    if entry["size"] > MAX_SMALL_MEMBER:
        raise InputError(f"{bundle.path}: member {path} is too large to read in memory")
    data = bundle.read_member(path)
    assert data is not None
    return data
