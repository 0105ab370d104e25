from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from station.domain.colours import (
    ALARM_RED,
    COURIER_WHITE,
    PALETTE,
    PALETTE_HEX,
    allocate_colour,
    colour_name,
)
from station.domain.errors import InvalidPhone
from station.domain.layout import SlotAddress
from station.domain.lights import SlotClaim, compose
from station.domain.lockout import DAY_S, LockoutPolicy, check, scope_delay
from station.domain.phones import mask_phone, normalise_phone, phone_hash

# --- colours ---------------------------------------------------------------------------------


def test_palette_has_at_least_six_distinct_colours_and_no_alarm_or_courier_colour() -> None:
    assert len(set(PALETTE_HEX)) == len(PALETTE_HEX) >= 6
    assert ALARM_RED not in PALETTE_HEX and COURIER_WHITE not in PALETTE_HEX
    assert len({en for _, en, _ in PALETTE}) == len(PALETTE)


@given(st.lists(st.sampled_from(PALETTE_HEX + ("#123456",)), max_size=20))
def test_never_a_live_sessions_colour_while_one_is_free(in_use: list[str]) -> None:
    colour = allocate_colour(in_use)
    assert colour in PALETTE_HEX
    if set(PALETTE_HEX) - set(in_use):
        assert colour not in in_use
    else:  # all taken: the least used one
        counts = {c: in_use.count(c) for c in PALETTE_HEX}
        assert counts[colour] == min(counts.values())


def test_sessions_opened_one_after_another_get_all_palette_colours() -> None:
    live: list[str] = []
    for _ in PALETTE_HEX:
        live.append(allocate_colour(live))
    assert sorted(live) == sorted(PALETTE_HEX)


def test_colour_names_in_both_languages() -> None:
    assert colour_name(PALETTE_HEX[0]) == "green" and colour_name(PALETTE_HEX[0], "zh") == "绿色"
    assert colour_name("#010203") == "#010203"


# --- lockout ---------------------------------------------------------------------------------

POLICY = LockoutPolicy(free_failures=3, first_delay_s=30, max_delay_s=3600, daily_failure_cap=20)


def test_lockout_delays_are_free_then_double_up_to_the_maximum() -> None:
    delays = [scope_delay(POLICY, n) for n in range(0, 14)]
    assert delays[:4] == [0, 0, 0, 0]
    assert delays[4:11] == [30, 60, 120, 240, 480, 960, 1920]
    assert delays[11:] == [3600, 3600, 3600]


def test_a_scope_waits_its_delay_after_the_last_failure() -> None:
    fails = [100.0, 101.0, 102.0, 103.0]
    v = check(POLICY, 104.0, fails, fails)
    assert not v.allowed and v.reason == "delay" and v.retry_after_s == pytest.approx(29.0)
    assert check(POLICY, 133.0, fails, fails).allowed


def test_daily_cap_holds_across_scopes_until_the_oldest_failure_is_a_day_old() -> None:
    fails = [1000.0 + 60 * i for i in range(20)]
    v = check(POLICY, fails[-1] + 1, [], fails)
    assert not v.allowed and v.reason == "daily_cap"
    assert v.retry_after_s == pytest.approx(fails[0] + DAY_S - (fails[-1] + 1))
    assert check(POLICY, fails[0] + DAY_S, [], fails).allowed


@settings(max_examples=100)
@given(st.lists(st.tuples(st.floats(0, 3 * DAY_S), st.integers(0, 4)), max_size=300))
def test_an_attacker_never_gets_more_than_the_cap_in_any_day(attempts: list[tuple[float, int]]) -> None:
    """Whatever the attempt times and kiosks, recorded failures in any 24 h <= the cap."""
    station: list[float] = []
    scopes: dict[int, list[float]] = {}
    for now, kiosk in sorted(attempts):
        if check(POLICY, now, scopes.get(kiosk, []), station).allowed:
            station.append(now)
            scopes.setdefault(kiosk, []).append(now)
    for t in station:
        assert sum(1 for u in station if t <= u < t + DAY_S) <= POLICY.daily_failure_cap


# --- phones ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["13812341234", "+86 138 1234 1234", "0086-138-1234-1234", "(138) 1234 1234"])
def test_phone_normalise_accepts_common_forms(text: str) -> None:
    assert normalise_phone(text) == "13812341234"


@pytest.mark.parametrize("text", ["", "12812341234", "1381234123", "138123412345", "+1 138 1234 1234",
                                  "1381234123x", None, 13812341234])
def test_phone_normalise_refuses_what_is_not_a_mobile_number(text: object) -> None:
    with pytest.raises(InvalidPhone):
        normalise_phone(text)


def test_phone_mask_keeps_three_and_four_digits() -> None:
    assert mask_phone("+86 13812341234") == "138****1234"


@given(st.integers(3 * 10**9, 10**10 - 1))
def test_phone_hash_is_keyed_and_format_independent(n: int) -> None:
    number = f"1{n:010d}"
    key = b"k" * 32
    h = phone_hash(number, key)
    assert h == phone_hash(f"+86 {number}", key)
    assert h != phone_hash(number, b"j" * 32)
    assert h != hashlib.sha256(number.encode()).hexdigest(), "an unkeyed hash can be brute-forced"
    assert h == hmac.new(key, f"phone/{number}".encode(), hashlib.sha256).hexdigest()


# --- lights ----------------------------------------------------------------------------------

A1, A2 = SlotAddress(1, 1, 1), SlotAddress(1, 1, 2)
GREEN, BLUE = PALETTE_HEX[0], PALETTE_HEX[1]


def test_one_claim_is_solid_in_its_colour() -> None:
    out = compose([SlotClaim(A1, GREEN, 200.0)], [], 100.0, 600.0)
    assert set(out) == {A1}
    assert out[A1].colours == (GREEN,) and out[A1].pattern == "solid"
    assert out[A1].ttl_s == pytest.approx(100.0)


def test_two_sessions_at_one_slot_alternate_their_colours() -> None:
    out = compose([SlotClaim(A1, GREEN, 200.0), SlotClaim(A1, BLUE, 300.0)], [], 100.0, 600.0)
    assert out[A1].pattern == "alternate" and set(out[A1].colours) == {GREEN, BLUE}
    assert out[A1].ttl_s == pytest.approx(200.0)


def test_an_alarm_blinks_red_alone_and_alternates_with_the_colour_of_whoever_is_sent_there() -> None:
    out = compose([SlotClaim(A1, GREEN, 200.0)], [(A1, 110.0), (A2, 120.0)], 100.0, 600.0)
    assert out[A1].colours == (ALARM_RED, GREEN) and out[A1].pattern == "alternate"
    assert out[A1].ttl_s == pytest.approx(10.0)      # ends with the alarm; then green alone
    assert out[A2].colours == (ALARM_RED,) and out[A2].pattern == "blink"
    after = compose([SlotClaim(A1, GREEN, 200.0)], [(A1, 110.0)], 111.0, 600.0)
    assert after[A1].colours == (GREEN,) and after[A1].pattern == "solid"


def test_an_alarm_over_many_claims_keeps_to_the_colours_a_slot_can_show() -> None:
    claims = [SlotClaim(A1, c, 200.0) for c in PALETTE_HEX[:5]]
    out = compose(claims, [(A1, 110.0)], 100.0, 600.0)
    assert out[A1].colours[0] == ALARM_RED and len(out[A1].colours) == 4


def test_expired_claims_and_alarms_are_dark() -> None:
    assert compose([SlotClaim(A1, GREEN, 100.0)], [(A2, 99.0)], 100.0, 600.0) == {}


def test_ttl_never_exceeds_the_maximum_and_never_drops_below_a_second() -> None:
    out = compose([SlotClaim(A1, GREEN, 10_000.0), SlotClaim(A2, BLUE, 100.2)], [], 100.0, 600.0)
    assert out[A1].ttl_s == 600.0 and out[A2].ttl_s == 1.0


def test_a_blinking_claim_blinks() -> None:
    out = compose([SlotClaim(A1, GREEN, 200.0, blink=True)], [], 100.0, 600.0)
    assert out[A1].pattern == "blink"


@given(st.lists(st.tuples(st.sampled_from([A1, A2]), st.sampled_from(PALETTE_HEX), st.floats(0, 300)), max_size=10),
       st.floats(0, 300))
def test_compose_lights_a_slot_exactly_when_a_live_claim_is_there(raw: list, now: float) -> None:
    claims = [SlotClaim(a, c, u) for a, c, u in raw]
    out = compose(claims, [], now, 600.0)
    live = {c.slot for c in claims if c.until > now}
    assert set(out) == live
    for slot, spec in out.items():
        assert set(spec.colours) == {c.colour for c in claims if c.slot == slot and c.until > now}
        assert 0 < spec.ttl_s <= 600.0
