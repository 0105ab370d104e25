from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from station.domain.codes import (
    MAX_CODES_PER_SLOT,
    QR_PREFIX,
    RANDOM_DIGITS,
    PickupCode,
    code_digest,
    new_code,
    parse_qr_payload,
    qr_payload,
)
from station.domain.errors import InvalidPickupCode
from station.domain.layout import SlotAddress

addresses = st.builds(SlotAddress, st.integers(1, 99), st.integers(1, 9), st.integers(1, 99))
secrets_ = st.integers(0, 10**RANDOM_DIGITS - 1).map(lambda n: f"{n:0{RANDOM_DIGITS}d}")
codes = st.builds(PickupCode, addresses, secrets_)
KEY = bytes(range(32))


@settings(max_examples=50)
@given(addresses, st.integers(0, 2**32))
def test_codes_drawn_into_one_slot_are_unique_among_those_waiting(slot: SlotAddress, seed: int) -> None:
    rng = random.Random(seed)
    taken: set[str] = set()
    for _ in range(200):
        code = new_code(slot, taken, rng)
        assert code.slot == slot
        assert code.secret not in taken
        taken.add(code.secret)


class _Rigged:
    """A random source that first repeats values already taken."""

    def __init__(self, values: list[int]) -> None:
        self.values = list(values)

    def randrange(self, stop: int) -> int:
        return self.values.pop(0)


def test_new_code_draws_again_when_the_random_part_is_taken() -> None:
    slot = SlotAddress(3, 2, 5)
    code = new_code(slot, {"00000007", "00000042"}, _Rigged([7, 42, 7, 99]))
    assert code.secret == "00000099"


def test_new_code_uses_the_system_random_source_by_default() -> None:
    a = new_code(SlotAddress(1, 1, 1), ())
    assert len(a.secret) == RANDOM_DIGITS and a.secret.isdigit()


@given(codes)
def test_code_parse_of_grouped_and_compact_forms(code: PickupCode) -> None:
    grouped = str(code)
    assert grouped == f"{code.slot}-{code.secret}"
    assert PickupCode.parse(grouped) == code
    assert PickupCode.parse(grouped.replace("-", " ")) == code
    assert len(code.compact) == 13 and code.compact.isdigit()
    assert PickupCode.parse(code.compact) == code
    spaced = f"{code.compact[:5]} {code.compact[5:9]} {code.compact[9:]}"
    assert PickupCode.parse(spaced) == code


@pytest.mark.parametrize("text", [
    "", "3-2-05", "3-2-05-1234567", "3-2-05-123456789", "3-2-05-1234567a", "012051234567",
    "01205123456789", "3-22-05-12345678", "abc", "0-2-05-12345678", "00205123456789"[:13],
    "3-0-05-12345678",
])
def test_bad_codes_are_refused_with_a_typed_error(text: str) -> None:
    with pytest.raises(InvalidPickupCode):
        PickupCode.parse(text)


def test_impossible_location_is_named_in_the_error() -> None:
    with pytest.raises(InvalidPickupCode, match="location is impossible"):
        PickupCode.parse("0-2-05-12345678")


def test_parse_refuses_non_text() -> None:
    with pytest.raises(InvalidPickupCode):
        PickupCode.parse(1234567890123)


def test_random_part_must_have_eight_digits() -> None:
    with pytest.raises(InvalidPickupCode):
        PickupCode(SlotAddress(1, 1, 1), "1234")


@given(codes, codes)
def test_code_digest_is_keyed_and_distinguishes_codes(a: PickupCode, b: PickupCode) -> None:
    assert code_digest(a, KEY) == code_digest(a, KEY)
    assert code_digest(a, KEY) != code_digest(a, bytes(32))
    assert (code_digest(a, KEY) == code_digest(b, KEY)) == (a == b)
    assert a.secret not in code_digest(a, KEY)


@given(codes)
def test_genuine_qr_payload_parses_back_to_its_code(code: PickupCode) -> None:
    payload = qr_payload("st-demo", code, KEY)
    prefix, station, text, tag = payload.split(":")
    assert (prefix, station, text) == (QR_PREFIX, "st-demo", str(code))
    assert len(tag) == 16 and int(tag, 16) >= 0, "a 64-bit tag as 16 hex digits"
    assert parse_qr_payload(payload, "st-demo", KEY) == code


@given(codes, st.integers(0, 15), st.integers(1, 15))
def test_forged_qr_tag_is_refused(code: PickupCode, pos: int, delta: int) -> None:
    payload = qr_payload("st-demo", code, KEY)
    head, tag = payload.rsplit(":", 1)
    forged_digit = format((int(tag[pos], 16) + delta) % 16, "x")
    forged = f"{head}:{tag[:pos]}{forged_digit}{tag[pos + 1:]}"
    with pytest.raises(InvalidPickupCode, match="not genuine"):
        parse_qr_payload(forged, "st-demo", KEY)


@given(codes, codes)
def test_a_tag_does_not_carry_over_to_another_code(a: PickupCode, b: PickupCode) -> None:
    if a == b:
        return
    tag = qr_payload("st-demo", a, KEY).rsplit(":", 1)[1]
    with pytest.raises(InvalidPickupCode):
        parse_qr_payload(f"{QR_PREFIX}:st-demo:{b}:{tag}", "st-demo", KEY)


def test_qr_of_another_station_is_refused_by_name() -> None:
    code = PickupCode(SlotAddress(1, 1, 1), "12345678")
    with pytest.raises(InvalidPickupCode, match="another station"):
        parse_qr_payload(qr_payload("st-other", code, KEY), "st-demo", KEY)


def test_qr_made_with_another_key_is_not_genuine() -> None:
    code = PickupCode(SlotAddress(1, 1, 1), "12345678")
    with pytest.raises(InvalidPickupCode, match="not genuine"):
        parse_qr_payload(qr_payload("st-demo", code, bytes(32)), "st-demo", KEY)


@pytest.mark.parametrize("text", ["", "hello", "PS1:st-demo:1-1-01-12345678", "XX1:st-demo:1-1-01-12345678:00",
                                  "PS1:st-demo:1-1-01-12345678:aa:bb"])
def test_text_that_is_no_pickup_qr_is_refused(text: str) -> None:
    with pytest.raises(InvalidPickupCode):
        parse_qr_payload(text, "st-demo", KEY)


def test_at_most_four_codes_wait_in_a_slot() -> None:
    assert MAX_CODES_PER_SLOT == 4
