"""Recipient phone numbers: validated, then kept only as a keyed hash and a masked form."""

from __future__ import annotations

import hashlib
import hmac
import re

from .errors import InvalidPhone

# Mainland China mobile numbers: 11 digits starting 13-19; an optional +86 / 0086 prefix.
_CN_MOBILE = re.compile(r"^1[3-9]\d{9}$")


def normalise_phone(text: object) -> str:
    if not isinstance(text, str):
        raise InvalidPhone("a phone number is text of 11 digits like 13812341234")
    digits = re.sub(r"[\s\-()]", "", text)
    if digits.startswith("+86"):
        digits = digits[3:]
    elif digits.startswith("0086"):
        digits = digits[4:]
    if not _CN_MOBILE.match(digits):
        raise InvalidPhone("not a mobile number: 11 digits starting with 13-19 expected")
    return digits


def phone_hash(phone: str, key: bytes) -> str:
    """Keyed hash: the same number always gives the same hash at this station (so the
    operator can look a number up) but a stolen database cannot be brute-forced offline."""
    return hmac.new(key, f"phone/{normalise_phone(phone)}".encode(), hashlib.sha256).hexdigest()


def mask_phone(phone: str) -> str:
    digits = normalise_phone(phone)
    return f"{digits[:3]}****{digits[-4:]}"
