"""Guessing limits on the steady clock, and a courier login that does not tell which ids exist
(issues #14.12 and #22.3).

Counts, not wall-clock times: an unknown courier id costs exactly one argon2 verify and one
counted failure, as a wrong PIN does; a wall-clock step (injected through the station's
clocks, tests/flows/harness.py FakeClock.step) neither lengthens a lockout past its
configured bound nor shortens one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from station.config import Secrets
from station.domain.errors import LockedOut
from station.flows.errors import AuthFailed

from .harness import Station, make_station, phone, sf_waybill


class SpyHasher:
    """The couriers' argon2 hasher, counting verifies (and what they were verified against)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.verified: list[str] = []

    def hash(self, pin: str) -> str:
        return self.real.hash(pin)

    def verify(self, pin_hash: str, pin: str) -> bool:
        self.verified.append(pin_hash)
        return self.real.verify(pin_hash, pin)


def _failures(st: Station, scope: str) -> int:
    return len(st.store.query("SELECT seq FROM auth_failures WHERE scope = ? AND cleared = 0", (scope,)))


def test_an_unknown_courier_id_costs_one_argon2_verify_and_one_counted_failure_like_a_wrong_pin(
        tmp_path: Path, secrets: Secrets) -> None:
    st = make_station(tmp_path, secrets)
    st.add_courier("c1", pin="2468")
    couriers = st.core.couriers
    spy = SpyHasher(couriers.hasher)
    couriers.hasher = spy  # type: ignore[assignment]
    stored = st.store.query_one("SELECT pin_hash FROM couriers WHERE id = 'c1'")["pin_hash"]
    known = couriers.seal.open("c1", stored)

    with pytest.raises(AuthFailed):
        couriers.check_pin("c1", "1357")
    with pytest.raises(AuthFailed):
        couriers.check_pin("nobody", "1357")
    assert len(spy.verified) == 2
    assert spy.verified[0] == known
    dummy = spy.verified[1]
    assert dummy != known
    # the same argon2 parameters (variant, version, memory, time, parallelism): the same cost
    assert dummy.rsplit("$", 2)[0] == known.rsplit("$", 2)[0]
    assert _failures(st, "courier:c1") == _failures(st, "courier:nobody") == 1
    rejected = [e["subject"] for e in st.events("auth.pin.rejected")]
    assert rejected == ["courier:c1", "courier:nobody"]

    # and the unknown id is locked out after the same number of tries as a known one
    for _ in range(st.config.lockout.free_failures):
        with pytest.raises(AuthFailed):
            couriers.check_pin("nobody", "1357")
    with pytest.raises(LockedOut):
        couriers.check_pin("nobody", "1357")
    assert len(spy.verified) == 2 + st.config.lockout.free_failures
    # a right PIN is one verify too
    assert couriers.check_pin("c1", "2468").id == "c1"
    assert len(spy.verified) == 3 + st.config.lockout.free_failures


def _wrong(st: Station, n: int = 1) -> None:
    for i in range(n):
        with pytest.raises(AuthFailed):
            st.core.pickup.enter_with_code(f"1-1-01-{i:08d}", "kiosk-1")


def test_a_backward_clock_step_does_not_lock_a_kiosk_that_was_not_locked(tmp_path: Path, secrets: Secrets) -> None:
    st = make_station(tmp_path, secrets)
    st.add_courier()
    st.shelve(sf_waybill(1), phone(1))
    _wrong(st)
    st.clock.step(-3600.0)  # NTP or an operator sets the clock back an hour
    st.clock.advance(1.0)
    _wrong(st)  # still a free failure: no wait at all
    _wrong(st)


def test_a_backward_clock_step_never_lengthens_a_wait_past_its_bound(tmp_path: Path, secrets: Secrets) -> None:
    st = make_station(tmp_path, secrets)
    lk = st.config.lockout
    st.add_courier()
    st.shelve(sf_waybill(1), phone(1))
    _wrong(st, lk.free_failures + 1)  # the next guess waits first_delay_s
    with pytest.raises(LockedOut) as exc:
        st.core.pickup.enter_with_code("1-1-01-99999999", "kiosk-1")
    assert exc.value.retry_after_s == pytest.approx(lk.first_delay_s)
    st.clock.step(-3600.0)
    with pytest.raises(LockedOut) as exc:
        st.core.pickup.enter_with_code("1-1-01-99999999", "kiosk-1")
    assert exc.value.retry_after_s == pytest.approx(lk.first_delay_s)
    st.clock.advance(lk.first_delay_s)
    _wrong(st)  # the wait was first_delay_s of steady time, step or not


def test_a_forward_clock_step_does_not_shorten_a_wait(tmp_path: Path, secrets: Secrets) -> None:
    st = make_station(tmp_path, secrets)
    lk = st.config.lockout
    st.add_courier()
    st.shelve(sf_waybill(1), phone(1))
    _wrong(st, lk.free_failures + 1)
    st.clock.step(+86400.0)  # a day ahead: neither the delay nor the daily cap is over
    with pytest.raises(LockedOut) as exc:
        st.core.pickup.enter_with_code("1-1-01-99999999", "kiosk-1")
    assert exc.value.retry_after_s == pytest.approx(lk.first_delay_s)


def test_one_time_codes_expire_on_the_steady_clock(tmp_path: Path, secrets: Secrets) -> None:
    st = make_station(tmp_path, secrets)
    lk = st.config.lockout
    st.add_courier()
    st.shelve(sf_waybill(1), phone(1))
    st.core.pickup.request_otp(phone(1))
    otp = st.outbox.messages[-1]["otp"]
    st.clock.step(-3600.0)  # would have given the code an extra hour of life
    st.clock.advance(lk.otp_ttl_s + 1)
    with pytest.raises(AuthFailed):
        st.core.pickup.enter_with_otp(phone(1), otp)
    # and a forward step does not end the per-phone day early
    for _ in range(lk.otp_per_phone_per_day - 1):
        st.core.pickup.request_otp(phone(1))
    sent = len(st.outbox.messages)
    st.clock.step(+2 * 86400.0)
    st.core.pickup.request_otp(phone(1))
    assert len(st.outbox.messages) == sent


# --- timeouts (issue #22.3): sessions and placements end on the steady clock ---------------


@pytest.mark.parametrize("step", [-3600.0, -120.0, +120.0, +3600.0, +86400.0])
def test_a_pickup_session_ends_after_its_timeout_whatever_the_wall_clock_did(
        tmp_path: Path, secrets: Secrets, step: float) -> None:
    st = make_station(tmp_path, secrets)
    st.add_courier()
    slot, code = st.shelve(sf_waybill(1), phone(1))
    st.core.pickup.enter_with_code(code)
    assert st.tick(0.5)["sessions_timed_out"] == 0  # the service's tick sees the session
    st.clock.step(step)
    timeout = st.config.station.pickup_session_timeout_s
    assert st.tick(timeout - 1.5)["sessions_timed_out"] == 0  # a forward step cuts nothing short
    assert st.light(slot) is not None
    assert st.tick(2)["sessions_timed_out"] == 1  # a backward step stretches nothing


@pytest.mark.parametrize("step", [-3600.0, +3600.0])
def test_a_placement_times_out_after_its_timeout_whatever_the_wall_clock_did(
        tmp_path: Path, secrets: Secrets, step: float) -> None:
    st = make_station(tmp_path, secrets)
    st.add_courier()
    sid = st.core.shelving.open_session("c1", "guided")["session_id"]
    st.core.shelving.scan(sid, sf_waybill(1), phone(1), "S")
    assert st.tick(0.5)["placements_failed"] == 0
    st.clock.step(step)
    timeout = st.config.station.placement_timeout_s
    assert st.tick(timeout - 1.5)["placements_failed"] == 0
    assert st.tick(2)["placements_failed"] == 1


def test_after_a_restart_a_deadline_written_on_a_fast_clock_waits_no_longer_than_its_timeout(
        tmp_path: Path, secrets: Secrets) -> None:
    st = make_station(tmp_path, secrets)
    st.add_courier()
    slot, code = st.shelve(sf_waybill(1), phone(1))
    st.clock.step(+3600.0)  # the clock ran an hour fast when the customer came in
    st.core.pickup.enter_with_code(code)
    st.clock.step(-3600.0)  # and was put right while the station was down
    st.ctx.timeouts.clear()  # what a restart remembers of the steady clock: nothing
    timeout = st.config.station.pickup_session_timeout_s
    assert st.tick(0.5)["sessions_timed_out"] == 0
    assert st.tick(timeout)["sessions_timed_out"] == 1


# --- read-decide-write in the tick: what happened between the read and the lock wins -------


class LockWithAnEntrance:
    """The station lock, running `before` once just before it is next taken: the moment
    between the tick's read of what is due and its transaction."""

    def __init__(self, lock: Any) -> None:
        self.lock = lock
        self.before: Any = None

    def __enter__(self) -> Any:
        hook, self.before = self.before, None
        if hook is not None:
            hook()
        return self.lock.__enter__()

    def __exit__(self, *exc: object) -> Any:
        return self.lock.__exit__(*exc)


def test_a_put_sensed_while_the_tick_times_its_placement_out_is_not_failed(
        tmp_path: Path, secrets: Secrets) -> None:
    st = make_station(tmp_path, secrets)
    st.add_courier()
    sid = st.core.shelving.open_session("c1", "guided")["session_id"]
    r = st.core.shelving.scan(sid, sf_waybill(1), phone(1), "S")
    st.clock.advance(st.config.station.placement_timeout_s + 1)
    lock = LockWithAnEntrance(st.ctx.lock)
    st.ctx.lock = lock  # type: ignore[assignment]
    lock.before = lambda: st.put(r.slot)  # the courier's put lands just then
    assert st.core.tick(st.clock())["placements_failed"] == 0
    assert st.events("parcel.placement.failed") == []
    assert st.store.query_one("SELECT state FROM parcels WHERE waybill = ?", (sf_waybill(1),))["state"] == "shelved"


def test_a_session_ended_at_the_exit_while_the_tick_times_it_out_is_not_closed_twice(
        tmp_path: Path, secrets: Secrets) -> None:
    st = make_station(tmp_path, secrets)
    st.add_courier()
    slot, code = st.shelve(sf_waybill(1), phone(1))
    st.core.pickup.enter_with_code(code)
    st.take(slot)
    st.clock.advance(st.config.station.pickup_session_timeout_s + 1)
    lock = LockWithAnEntrance(st.ctx.lock)
    st.ctx.lock = lock  # type: ignore[assignment]
    lock.before = lambda: st.core.exit.check([sf_waybill(1)])  # the customer leaves just then
    assert st.core.tick(st.clock())["sessions_timed_out"] == 0
    closed = [e["data"] for e in st.events("pickup.closed")]
    assert len(closed) == 1 and '"completed"' in closed[0], closed


def test_a_courier_removed_while_their_face_is_enrolled_gets_no_templates_and_is_removed_once(
        tmp_path: Path, secrets: Secrets) -> None:
    from station.flows.errors import NotFound

    st = make_station(tmp_path, secrets)
    st.add_courier("c1")
    lock = LockWithAnEntrance(st.ctx.lock)
    st.ctx.lock = lock  # type: ignore[assignment]
    lock.before = lambda: st.core.couriers.remove("c1")  # another operator, just then
    with pytest.raises(NotFound):
        st.core.couriers.store_templates("c1", [b"template"])
    assert st.store.query("SELECT courier_id FROM face_templates") == []
    st.add_courier("c2")
    lock.before = lambda: st.core.couriers.remove("c2")
    with pytest.raises(NotFound):
        st.core.couriers.remove("c2")
    assert [e["subject"] for e in st.events("courier.removed")] == ["c1", "c2"]
