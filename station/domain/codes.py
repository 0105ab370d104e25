"""Pickup codes (DESIGN §4, docs/pickup-codes.md).

A code is the slot address plus a random part: `3-2-05-48213307`. The location lets a
customer walk to the shelf even when no LED works; the random part makes the code
unguessable. The random part is unique among the codes waiting in that slot, so a code
names exactly one parcel. Any valid code of a recipient opens a session for all of that
recipient's waiting parcels.

The random part is 8 digits. At most `capacity` (<= 4) codes wait in one slot, so one
guess, even with the location right, succeeds with probability <= 4 / 10^8; the lockout
caps failed guesses at `daily_failure_cap` (default 20) a day for the whole station, so a
day of guessing succeeds with probability <= 20 * 4e-8 = 8e-7 < 1e-6."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from .errors import InvalidPickupCode, InvalidSlotAddress
from .layout import SlotAddress

RANDOM_DIGITS = 8
MAX_CODES_PER_SLOT = 4
QR_PREFIX = "PS1"
_GROUPED = re.compile(r"^(\d{1,2})[-\s](\d)[-\s](\d{1,2})[-\s](\d{8})$")
_COMPACT = re.compile(r"^(\d{2})(\d)(\d{2})(\d{8})$")


class RandomSource(Protocol):
    def randrange(self, start: int, stop: int | None = ..., step: int = ...) -> int: ...


@dataclass(frozen=True)
class PickupCode:
    slot: SlotAddress
    secret: str

    def __post_init__(self) -> None:
        if not (len(self.secret) == RANDOM_DIGITS and self.secret.isdigit()):
            raise InvalidPickupCode(f"the random part has {RANDOM_DIGITS} digits")

    def __str__(self) -> str:
        return f"{self.slot}-{self.secret}"

    @property
    def compact(self) -> str:
        """13 digits with no separators, for keypads: SS R CC NNNNNNNN."""
        s = self.slot
        return f"{s.shelf:02d}{s.row}{s.col:02d}{self.secret}"

    @classmethod
    def parse(cls, text: object) -> PickupCode:
        if not isinstance(text, str):
            raise InvalidPickupCode("a pickup code is text like 3-2-05-48213307")
        cleaned = text.strip()
        match = _GROUPED.match(cleaned) or _COMPACT.match(cleaned.replace(" ", ""))
        if not match:
            raise InvalidPickupCode(
                "a pickup code looks like 3-2-05-48213307 (or its 13 digits without dashes)"
            )
        try:
            slot = SlotAddress(int(match[1]), int(match[2]), int(match[3]))
        except InvalidSlotAddress as exc:
            raise InvalidPickupCode(f"the code's location is impossible: {exc.message}") from None
        return cls(slot, match[4])


def new_code(
    slot: SlotAddress, taken: Collection[str], rng: RandomSource | None = None
) -> PickupCode:
    """A fresh code for `slot`; `taken` are the random parts already waiting there."""
    rng = rng or secrets.SystemRandom()
    if len(taken) >= 10**RANDOM_DIGITS:
        raise InvalidPickupCode("no random part left for this slot")
    while True:
        secret = f"{rng.randrange(10**RANDOM_DIGITS):0{RANDOM_DIGITS}d}"
        if secret not in taken:
            return PickupCode(slot, secret)


def code_digest(code: PickupCode, key: bytes) -> str:
    """Keyed hash of a code: what the store keeps, so a copied database reveals no codes."""
    return hmac.new(key, f"code/{code}".encode(), hashlib.sha256).hexdigest()


def qr_payload(station_id: str, code: PickupCode, key: bytes) -> str:
    """The QR text sent to the customer: the code plus a 64-bit tag only the station can make.

    A typed code is limited by the lockout; a QR needs no lockout because its tag cannot be
    guessed (2^-64 a try)."""
    tag = hmac.new(key, f"qr/{station_id}/{code}".encode(), hashlib.sha256).hexdigest()[:16]
    return f"{QR_PREFIX}:{station_id}:{code}:{tag}"


def parse_qr_payload(text: str, station_id: str, key: bytes) -> PickupCode:
    parts = text.strip().split(":")
    if len(parts) != 4 or parts[0] != QR_PREFIX:
        raise InvalidPickupCode("this QR code is not a pickup code of a parcel station")
    if parts[1] != station_id:
        raise InvalidPickupCode("this QR code belongs to another station")
    code = PickupCode.parse(parts[2])
    expected = qr_payload(station_id, code, key).rsplit(":", 1)[1]
    if not hmac.compare_digest(expected, parts[3]):
        raise InvalidPickupCode("this QR code is not genuine")
    return code


def guess_success_per_day(
    random_digits: int = RANDOM_DIGITS,
    codes_per_slot: int = MAX_CODES_PER_SLOT,
    failures_per_day: int = 20,
) -> float:
    """Upper bound of a day's guessing success, assuming the attacker knows an occupied slot."""
    return failures_per_day * codes_per_slot / 10**random_digits
