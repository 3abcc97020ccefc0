"""AES-GCM in pure Python, for the kubeadm-certs Secret (a node's Python has no `cryptography`).

kubeadm (cmd/kubeadm/app/util/crypto EncryptBytes/DecryptBytes) seals each certificate with
AES-GCM under the hex-decoded certificate key: ``nonce (12 bytes) || ciphertext || tag``.
A wrong key or a changed byte fails the tag check with Go's "cipher: message authentication
failed". FIPS 197 (AES) and NIST SP 800-38D (GCM); slow (a few KB/s are enough here).
"""

from __future__ import annotations

import hmac
import secrets

NONCE_SIZE = 12
TAG_SIZE = 16
AUTH_FAILED = "cipher: message authentication failed"


class AuthenticationFailed(Exception):
    """The tag did not match: a wrong key or tampered data."""


def _xtime(a: int) -> int:
    a <<= 1
    return (a ^ 0x11B) if a & 0x100 else a


def _sbox() -> list[int]:
    box = [0] * 256
    p = q = 1
    while True:  # walk the multiplicative group with generator 3, inverses by 3^-1
        p = p ^ _xtime(p)
        q ^= q << 1
        q ^= q << 2
        q ^= q << 4
        q &= 0xFF
        if q & 0x80:
            q ^= 0x09
        x = q ^ ((q << 1) | (q >> 7)) ^ ((q << 2) | (q >> 6)) ^ ((q << 3) | (q >> 5)) ^ ((q << 4) | (q >> 4))
        box[p] = (x ^ 0x63) & 0xFF
        if p == 1:
            break
    box[0] = 0x63
    return box


SBOX = _sbox()


def expand_key(key: bytes) -> list[list[int]]:
    """Round keys (as 16-byte lists) for a 16-, 24- or 32-byte key."""
    if len(key) not in (16, 24, 32):
        raise ValueError(f"crypto/aes: invalid key size {len(key)}")
    nk = len(key) // 4
    rounds = nk + 6
    words = [list(key[4 * i : 4 * i + 4]) for i in range(nk)]
    rcon = 1
    for i in range(nk, 4 * (rounds + 1)):
        temp = list(words[i - 1])
        if i % nk == 0:
            temp = [SBOX[b] for b in temp[1:] + temp[:1]]
            temp[0] ^= rcon
            rcon = _xtime(rcon) & 0xFF
        elif nk > 6 and i % nk == 4:
            temp = [SBOX[b] for b in temp]
        words.append([a ^ b for a, b in zip(words[i - nk], temp)])
    return [sum(words[4 * r : 4 * r + 4], []) for r in range(rounds + 1)]


def encrypt_block(round_keys: list[list[int]], block: bytes) -> bytes:
    state = [b ^ k for b, k in zip(block, round_keys[0])]
    last = len(round_keys) - 1
    for r in range(1, last + 1):
        state = [SBOX[b] for b in state]
        state = [state[(i + 4 * (i % 4)) % 16] for i in range(16)]  # ShiftRows (column-major)
        if r != last:
            mixed = []
            for c in range(4):
                a = state[4 * c : 4 * c + 4]
                t = a[0] ^ a[1] ^ a[2] ^ a[3]
                mixed += [a[i] ^ t ^ (_xtime(a[i] ^ a[(i + 1) % 4]) & 0xFF) for i in range(4)]
            state = mixed
        state = [b ^ k for b, k in zip(state, round_keys[r])]
    return bytes(state)


def _gf_mult(x: int, y: int) -> int:
    z, v = 0, y
    for i in range(127, -1, -1):
        if (x >> i) & 1:
            z ^= v
        v = (v >> 1) ^ (0xE1 << 120) if v & 1 else v >> 1
    return z


def _ghash(h: int, data: bytes) -> int:
    padded = data + b"\0" * (-len(data) % 16)
    lengths = (0).to_bytes(8, "big") + (8 * len(data)).to_bytes(8, "big")
    y = 0
    for i in range(0, len(padded + lengths), 16):
        y = _gf_mult(y ^ int.from_bytes((padded + lengths)[i : i + 16], "big"), h)
    return y


def _ctr(round_keys: list[list[int]], counter: int, data: bytes) -> bytes:
    out = bytearray()
    for i in range(0, len(data), 16):
        prefix, count = counter >> 32, (counter + 1 + i // 16) & 0xFFFFFFFF
        stream = encrypt_block(round_keys, ((prefix << 32) | count).to_bytes(16, "big"))
        out += bytes(a ^ b for a, b in zip(data[i : i + 16], stream))
    return bytes(out)


def _tag(round_keys: list[list[int]], j0: int, ciphertext: bytes) -> bytes:
    h = int.from_bytes(encrypt_block(round_keys, bytes(16)), "big")
    s = _ghash(h, ciphertext)
    return (s ^ int.from_bytes(encrypt_block(round_keys, j0.to_bytes(16, "big")), "big")).to_bytes(16, "big")


def seal(key: bytes, data: bytes, nonce: bytes | None = None) -> bytes:
    """``nonce || ciphertext || tag``, as Go's ``gcm.Seal(nonce, nonce, data, nil)``."""
    nonce = nonce or secrets.token_bytes(NONCE_SIZE)
    round_keys = expand_key(key)
    j0 = (int.from_bytes(nonce, "big") << 32) | 1
    ciphertext = _ctr(round_keys, j0, data)
    return nonce + ciphertext + _tag(round_keys, j0, ciphertext)


def open_sealed(key: bytes, sealed: bytes) -> bytes:
    """The plaintext of ``seal``'s output; AuthenticationFailed for a wrong key or tampering."""
    if len(sealed) < NONCE_SIZE + TAG_SIZE:
        raise AuthenticationFailed("size of payload is less than the nonce size")
    round_keys = expand_key(key)
    nonce, body, tag = sealed[:NONCE_SIZE], sealed[NONCE_SIZE:-TAG_SIZE], sealed[-TAG_SIZE:]
    j0 = (int.from_bytes(nonce, "big") << 32) | 1
    if not hmac.compare_digest(_tag(round_keys, j0, body), tag):
        raise AuthenticationFailed(AUTH_FAILED)
    return _ctr(round_keys, j0, body)
