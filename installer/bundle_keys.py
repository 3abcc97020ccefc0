"""Small bundle members read on the admin host (GPG keys), and the ids rpm knows keys by.

Keys are read at their offsets in the bundle (never by walking the whole file) and checked
against their sha256 in the bundle metadata.
"""

from __future__ import annotations

import hashlib

from kubeferry.bundle_reader import Bundle, CorruptBundle
from kubeferry.bundler.aptmeta import dearmor
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


def _packets(data: bytes):
    """(tag, body) of each OpenPGP packet (RFC 4880 4.2, old and new headers)."""
    at = 0
    while at < len(data):
        header = data[at]
        if not header & 0x80:
            return
        if header & 0x40:  # new format
            tag = header & 0x3F
            first = data[at + 1]
            if first < 192:
                length, at = first, at + 2
            elif first < 224:
                length, at = ((first - 192) << 8) + data[at + 2] + 192, at + 3
            elif first == 255:
                length, at = int.from_bytes(data[at + 2:at + 6], "big"), at + 6
            else:
                return  # partial lengths: never used for keys
        else:
            tag = (header >> 2) & 0x0F
            size = {0: 1, 1: 2, 2: 4}.get(header & 3)
            if size is None:
                return
            length, at = int.from_bytes(data[at + 1:at + 1 + size], "big"), at + 1 + size
        yield tag, data[at:at + length]
        at += length


def rpm_key_ids(key_file: bytes) -> list[str]:
    """The ids ``rpm -q gpg-pubkey`` lists (``%{VERSION}``: the low 32 bits of each v4
    primary key's fingerprint, lower-case hex) for the keys in an armored or binary file."""
    ids = []
    for tag, body in _packets(dearmor(key_file)):
        if tag == 6 and body[:1] == b"\x04":
            fingerprint = hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest()
            ids.append(fingerprint[-8:])
    return ids
