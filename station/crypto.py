"""Authenticated encryption for personal data at rest (sealed phone numbers, the
notification outbox, face templates): the station's one AES-256-GCM wrapper.

Each use gets a key of its own, derived with HKDF from the station's `encryption_key` and
a purpose string, so no two uses share a key and nonce space. Each value carries the row's
identity as associated data, so a ciphertext copied onto another row does not decrypt."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = b"\x01"
NONCE_BYTES = 12
TAG_BYTES = 16


class DecryptError(ValueError):
    """Wrong key, tampered ciphertext, or a ciphertext moved to another row."""


def derive_key(key: bytes, purpose: str) -> bytes:
    if len(key) != 32:
        raise ValueError("the encryption key is 32 bytes")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=f"parcel-station/{purpose}/v1".encode()).derive(key)


class Sealer:
    """`seal(plain, aad)` -> version | nonce | ciphertext+tag; `open` reverses it."""

    def __init__(self, key: bytes, purpose: str) -> None:
        self._aead = AESGCM(derive_key(key, purpose))

    def seal(self, plaintext: bytes, aad: str | bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return VERSION + nonce + self._aead.encrypt(nonce, plaintext, _bytes(aad))

    def open(self, blob: bytes, aad: str | bytes) -> bytes:
        if len(blob) < 1 + NONCE_BYTES + TAG_BYTES or blob[:1] != VERSION:
            raise DecryptError("not a sealed value of this station")
        try:
            return self._aead.decrypt(blob[1:1 + NONCE_BYTES], blob[1 + NONCE_BYTES:], _bytes(aad))
        except InvalidTag:
            raise DecryptError("sealed value does not open: wrong key, tampered or moved") from None


def _bytes(aad: str | bytes) -> bytes:
    return aad if isinstance(aad, bytes) else aad.encode("utf-8")
