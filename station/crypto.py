"""Authenticated encryption for personal data at rest (phones in the outbox and contacts,
face templates): AES-256-GCM with a random nonce and the row's identity as associated data,
so a ciphertext copied onto another row does not decrypt."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = b"\x01"


class DecryptError(ValueError):
    """Wrong key, tampered ciphertext, or a ciphertext moved to another row."""


class Sealer:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the encryption key is 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, aad: str) -> bytes:
        nonce = os.urandom(12)
        return VERSION + nonce + self._aead.encrypt(nonce, plaintext, aad.encode())

    def open(self, blob: bytes, aad: str) -> bytes:
        if len(blob) < 1 + 12 + 16 or blob[:1] != VERSION:
            raise DecryptError("not a sealed value of this station")
        try:
            return self._aead.decrypt(blob[1:13], blob[13:], aad.encode())
        except InvalidTag:
            raise DecryptError("sealed value does not open: wrong key, tampered or moved") from None
