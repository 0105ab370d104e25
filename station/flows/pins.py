"""A courier's PIN hash as it travels in the event log: sealed (ADR 0082).

Replay must rebuild the couriers table from the log alone (DESIGN §3), so the argon2 hash has
to be in the `courier.added` and `courier.pin.changed` events; in clear it is a PIN that
anyone with an export, the upstream copy or the SD card can recover offline in minutes (a
4-digit PIN is 10^4 argon2 tries). Sealed with a key derived from the station's
`encryption_key` and bound to the courier id, it is worth nothing without that key, and the
projection keeps the sealed text as it came, so replay still rebuilds it byte for byte.

Logs written before sealing hold clear hashes (`$argon2...`); they are accepted as they are,
and reported as exposed so the operator changes those PINs (the chain is not rewritten)."""

from __future__ import annotations

import base64
import binascii

from station.crypto import DecryptError, Sealer

PREFIX = "sealed:v1:"
_LEGACY = "$argon2"


class PinSeal:
    def __init__(self, encryption_key: bytes) -> None:
        self._sealer = Sealer(encryption_key, "courier-pin")

    def seal(self, courier_id: str, pin_hash: str) -> str:
        blob = self._sealer.seal(pin_hash.encode(), _aad(courier_id))
        return PREFIX + base64.b64encode(blob).decode("ascii")

    def open(self, courier_id: str, stored: str) -> str:
        """The argon2 hash; raises DecryptError for anything this station did not seal for
        this courier (another station's key, a value copied from another courier's row)."""
        if stored.startswith(_LEGACY):
            return stored
        if not stored.startswith(PREFIX):
            raise DecryptError("not a sealed PIN hash")
        try:
            blob = base64.b64decode(stored[len(PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            raise DecryptError("not a sealed PIN hash") from None
        return self._sealer.open(blob, _aad(courier_id)).decode()


def exposed(stored: str) -> bool:
    """True for a hash that reached the event log in clear (set before ADR 0082)."""
    return stored.startswith(_LEGACY)


def _aad(courier_id: str) -> str:
    return f"courier/{courier_id}"
