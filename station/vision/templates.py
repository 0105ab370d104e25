"""Face templates encrypted at rest.

A 128-d encoding is biometric data: from it one can tell whether any photo shows the courier.
So it is stored only as AES-256-GCM ciphertext under a key derived from the station's
`encryption_key` (HKDF, purpose "face-template"), never the raw key, so the same secret used
elsewhere cannot be turned into a template-decryption oracle. The courier id is the
associated data: a template copied onto another courier's row does not decrypt, so swapping
rows in the database cannot make one courier's face open another's account.
Deleting the courier deletes the ciphertext; nothing else holds the template.
"""

from __future__ import annotations

import struct

import numpy as np

from station.crypto import DecryptError, Sealer

VERSION = 1
_AAD_PREFIX = b"ps-face-template/v1\x00"
_HEADER = struct.Struct(">BH")  # version, number of 128-d rows


class TemplateError(ValueError):
    """A stored template that cannot be used: tampered, wrong courier, wrong key, garbled."""


class TemplateCipher:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("encryption key must be 32 bytes")
        self._sealer = Sealer(key, "face-template")

    @staticmethod
    def _aad(courier_id: str, header: bytes) -> bytes:
        return _AAD_PREFIX + courier_id.encode("utf-8") + b"\x00" + header

    def encrypt(self, template: np.ndarray, courier_id: str) -> bytes:
        """(128,) or (k, 128) encodings -> version | rows | nonce | ciphertext+tag."""
        rows = np.asarray(template, dtype="<f4").reshape(-1, 128)
        if not len(rows) or not np.all(np.isfinite(rows)):
            raise ValueError("template must hold at least one finite 128-d encoding")
        header = _HEADER.pack(VERSION, len(rows))
        return header + self._sealer.seal(rows.tobytes(), self._aad(courier_id, header))

    def decrypt(self, blob: bytes, courier_id: str) -> np.ndarray:
        """The (k, 128) float32 encodings; TemplateError if anything does not check out."""
        if len(blob) < _HEADER.size + 1 + 12 + 16:
            raise TemplateError("template blob too short")
        header = blob[:_HEADER.size]
        version, rows = _HEADER.unpack(header)
        if version != VERSION:
            raise TemplateError(f"unknown template version {version}")
        try:
            plain = self._sealer.open(blob[_HEADER.size:], self._aad(courier_id, header))
        except DecryptError:
            raise TemplateError(
                "template does not decrypt: tampered, another courier's, or another key"
            ) from None
        if len(plain) != rows * 128 * 4:
            raise TemplateError("template length does not match its header")
        return np.frombuffer(plain, dtype="<f4").reshape(rows, 128).astype(np.float32)
