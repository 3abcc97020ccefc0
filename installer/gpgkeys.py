"""The ids rpm knows OpenPGP keys by, computed from the key files in the bundle.

``rpm -q gpg-pubkey --qf '%{VERSION}'`` lists the short id (low 32 bits of the v4
fingerprint) of every imported key: comparing it with the bundled keys' ids tells whether
``rpm --import`` is needed, so a re-run changes nothing.
"""

from __future__ import annotations

import hashlib
from typing import Iterator

from kubeferry.bundler.aptmeta import dearmor


def _packets(data: bytes) -> Iterator[tuple[int, bytes]]:
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
