"""OpenPGP key and signature ids, read in pure Python (RFC 4880).

``rpm -q gpg-pubkey --qf '%{VERSION}'`` lists the short id (low 32 bits of the v4
fingerprint) of every imported key: comparing it with the bundled keys' ids tells the
installer whether ``rpm --import`` is needed, so a re-run changes nothing. The build checks
that every package is signed by one of its repository's keys (``signature_key_id``, from
the rpm's signature header), as yum/dnf with ``gpgcheck=1`` will on the node.
"""

from __future__ import annotations

import hashlib
from typing import Iterator

from kubeferry.bundler.aptmeta import dearmor


def packets(data: bytes) -> Iterator[tuple[int, bytes]]:
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
    for tag, body in packets(dearmor(key_file)):
        if tag == 6 and body[:1] == b"\x04":
            fingerprint = hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest()
            ids.append(fingerprint[-8:])
    return ids


def key_ids(key_file: bytes) -> set[str]:
    """The 64-bit ids (lower-case hex) of every v4 key and subkey in an armored or binary file."""
    ids = set()
    for tag, body in packets(dearmor(key_file)):
        if tag in (6, 14) and body[:1] == b"\x04":
            ids.add(hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest()[-16:])
    return ids


def _subpacket_issuer(area: bytes) -> str | None:
    at = 0
    while at < len(area):
        first = area[at]
        if first < 192:
            length, at = first, at + 1
        elif first < 255:
            length, at = ((first - 192) << 8) + area[at + 1] + 192, at + 2
        else:
            length, at = int.from_bytes(area[at + 1:at + 5], "big"), at + 5
        kind = area[at] & 0x7F
        if kind == 16 and length >= 9:  # issuer key id
            return area[at + 1:at + 9].hex()
        if kind == 33 and length >= 22:  # issuer fingerprint (v4: 20 bytes after the version)
            return area[at + 2:at + 22].hex()[-16:]
        at += length
    return None


def signature_key_id(signature: bytes) -> str | None:
    """The 64-bit id of the key that made an OpenPGP signature packet (v3 or v4), if named."""
    for tag, body in packets(signature):
        if tag != 2 or not body:
            continue
        if body[0] == 3 and len(body) >= 15:
            return body[7:15].hex()
        if body[0] == 4 and len(body) >= 6:
            hashed = int.from_bytes(body[4:6], "big")
            found = _subpacket_issuer(body[6:6 + hashed])
            if found is None:
                start = 6 + hashed
                unhashed = int.from_bytes(body[start:start + 2], "big")
                found = _subpacket_issuer(body[start + 2:start + 2 + unhashed])
            return found
    return None
