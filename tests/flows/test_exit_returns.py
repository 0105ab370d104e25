"""Exit check, expiry and return runs, outbound drop-off and collection, on fakes."""

from __future__ import annotations

import json

import pytest

from station.flows.errors import AuthFailed, FlowError

from .harness import Station, phone, sf_waybill


def test_a_wrong_parcel_is_caught_at_the_exit(station: Station) -> None:
    mine, code = station.shelve(sf_waybill(1), phone(1))
    sid = station.core.shelving.open_session("c1", "guided")["session_id"]
    station.shelve(sf_waybill(2), phone(2), "M", session_id=sid)
    e = station.core.pickup.enter_with_code(code)
    r = station.core.exit.check([sf_waybill(1), sf_waybill(2)])
    assert not r.allowed
    assert {"waybill": sf_waybill(2), "problem": "not_yours"} in r.problems
    assert "door-exit" not in station.devices.unlocks
    alarm = station.store.query_one("SELECT * FROM alarms WHERE kind = 'exit.wrong_parcel'")
    assert alarm is not None
    states = {r["waybill"]: r["state"] for r in station.store.query("SELECT waybill, state FROM parcels")}
    assert states == {sf_waybill(1): "shelved", sf_waybill(2): "shelved"}
    # put back, show only their own: out they go
    ok = station.core.exit.check([sf_waybill(1)])
    assert ok.allowed and ok.session_id == e.session_id
    assert station.devices.unlocks == ["door-entry", "door-exit"]


def test_an_unknown_waybill_keeps_the_exit_locked(station: Station) -> None:
    _, code = station.shelve(sf_waybill(1), phone(1))
    station.core.pickup.enter_with_code(code)
    r = station.core.exit.check([sf_waybill(1), sf_waybill(77)])
    assert not r.allowed and {"waybill": sf_waybill(77), "problem": "unknown_waybill"} in r.problems
    assert "door-exit" not in station.devices.unlocks


def test_nobody_inside_cannot_carry_a_parcel_out(station: Station) -> None:
    station.shelve(sf_waybill(1), phone(1))
    r = station.core.exit.check([sf_waybill(1)])
    assert not r.allowed and station.devices.unlocks == []


def test_partial_pickup_leaves_the_rest_waiting(station: Station) -> None:
    sid = station.core.shelving.open_session("c1", "guided")["session_id"]
    _, code = station.shelve(sf_waybill(1), phone(1), "S", session_id=sid)
    station.shelve(sf_waybill(2), phone(1), "M", session_id=sid)
    station.core.pickup.enter_with_code(code)
    r = station.core.exit.check([sf_waybill(1)])
    assert r.allowed
    states = {r["waybill"]: r["state"] for r in station.store.query("SELECT waybill, state FROM parcels")}
    assert states == {sf_waybill(1): "picked_up", sf_waybill(2): "shelved"}
    assert station.lit_slots() == {}


def test_expiry_then_return_run_takes_the_parcel_back(station: Station) -> None:
    slot, code = station.shelve(sf_waybill(1), phone(1))
    days = station.config.station.retention_days
    assert station.tick(days * 86400 - 10)["parcels_expired"] == 0
    assert station.tick(20)["parcels_expired"] == 1
    assert station.store.query_one("SELECT state FROM parcels")["state"] == "expired"
    with pytest.raises(AuthFailed):
        station.core.pickup.enter_with_code(code)
    assert station.devices.unlocks == []
    run = station.core.returns.start_return_run("c1")
    assert [p["waybill"] for p in run["parcels"]] == [sf_waybill(1)]
    assert station.light(slot).colours == (run["colour"],)
    station.take(slot)
    assert station.store.query_one("SELECT state FROM parcels")["state"] == "returned"
    assert station.lit_slots() == {}
    station.core.returns.close_run(run["session_id"])
    assert station.store.query_one("SELECT state FROM sessions WHERE id = ?",
                                   (run["session_id"],))["state"] == "closed"


def test_a_return_run_only_covers_the_couriers_carrier(station: Station) -> None:
    station.shelve(sf_waybill(1), phone(1))
    station.add_courier("z1", "ZTO")
    station.tick(station.config.station.retention_days * 86400 + 1)
    run = station.core.returns.start_return_run("z1")
    assert run["parcels"] == [] and station.lit_slots() == {}


def test_outbound_drop_off_and_collection(station: Station) -> None:
    d = station.core.returns.start_dropoff("SFS123456", "M")
    slot = d["slot"]
    assert slot.startswith("9-") and d["carrier"] == "SF"
    assert station.light(slot).colours == (d["colour"],)
    station.put(slot)
    p = station.store.query_one("SELECT * FROM parcels WHERE waybill = 'SFS123456'")
    assert p["state"] == "dropped_off" and p["direction"] == "out" and p["slot"] == slot
    assert station.lit_slots() == {}
    with pytest.raises(FlowError) as exc:
        station.core.returns.start_dropoff("SFS123456", "M")
    assert exc.value.code == "duplicate_waybill"
    run = station.core.returns.start_collection_run("c1")
    assert [x["waybill"] for x in run["parcels"]] == ["SFS123456"]
    assert station.light(slot).colours == (run["colour"],)
    station.take(slot)
    assert station.store.query_one("SELECT state FROM parcels WHERE waybill = 'SFS123456'")["state"] == "collected"
    assert station.lit_slots() == {}


def test_an_outbound_parcel_cannot_leave_through_the_customer_exit(station: Station) -> None:
    station.core.returns.start_dropoff("SFS123456", "M")
    station.put(station.store.query_one("SELECT target_slot FROM pending_placements")["target_slot"])
    _, code = station.shelve(sf_waybill(1), phone(1))
    station.core.pickup.enter_with_code(code)
    r = station.core.exit.check([sf_waybill(1), "SFS123456"])
    assert not r.allowed and {"waybill": "SFS123456", "problem": "outbound_parcel"} in r.problems


def test_leaving_empty_handed_is_refused_after_a_sensed_take(station: Station) -> None:
    slot, code = station.shelve(sf_waybill(1), phone(1))
    e = station.core.pickup.enter_with_code(str(code))
    station.take(slot)
    refused = station.core.exit.leave_empty_handed(e.session_id)
    assert not refused.allowed and refused.problems == [{"slot": slot, "problem": "parcel_not_shown"}]
    assert "door-exit" not in station.devices.unlocks


def test_leaving_empty_handed_without_a_take_opens_the_exit(station: Station) -> None:
    _, code = station.shelve(sf_waybill(1), phone(1))
    e = station.core.pickup.enter_with_code(str(code))
    ok = station.core.exit.leave_empty_handed(e.session_id)
    assert ok.allowed and "door-exit" in station.devices.unlocks
    s = station.store.query_one("SELECT state, reason FROM sessions WHERE id = ?", (e.session_id,))
    assert (s["state"], s["reason"]) == ("closed", "left_empty_handed")


def _alarms(station: Station, slot: str) -> int:
    return len([e for e in station.events("slot.alarm") if e["subject"] == slot])


def test_a_take_sensed_after_the_customer_left_is_theirs_not_an_alarm(station: Station) -> None:
    """The exit camera read the parcel before the shelf's take arrived (a sensor debounce,
    a resent event after a dropped message): that take is the leaver's, no red light."""
    slot, code = station.shelve(sf_waybill(1), phone(1))
    station.core.pickup.enter_with_code(code)
    assert station.core.exit.check([sf_waybill(1)]).allowed
    station.take(slot)
    assert _alarms(station, slot) == 0
    taken = station.events("pickup.slot.taken")
    assert len(taken) == 1 and json.loads(taken[0]["data"]).get("late") is True
    # a second take there is nobody's: that one still blinks red
    station.take(slot)
    assert _alarms(station, slot) == 1


def test_a_late_take_is_not_credited_to_a_parcel_left_behind(station: Station) -> None:
    """Two parcels in one slot, the customer leaves with one: the take of the other one
    (somebody else lifting it) is still unexpected."""
    sid = station.core.shelving.open_session("c1", "guided")["session_id"]
    a, code = station.shelve(sf_waybill(1), phone(1), "S", session_id=sid)
    b, _ = station.shelve(sf_waybill(2), phone(1), "S", session_id=sid)
    assert a == b
    station.core.pickup.enter_with_code(code)
    station.take(a)                                   # sensed before the exit: in the session
    assert station.core.exit.check([sf_waybill(1)]).allowed
    station.take(a)                                   # the parcel left behind is lifted
    assert _alarms(station, a) == 1


def test_a_take_long_after_the_customer_left_is_unexpected(station: Station) -> None:
    slot, code = station.shelve(sf_waybill(1), phone(1))
    station.core.pickup.enter_with_code(code)
    assert station.core.exit.check([sf_waybill(1)]).allowed
    station.clock.advance(600)
    station.take(slot)
    assert _alarms(station, slot) == 1


@pytest.mark.parametrize("step_s", [-3600.0, -86400.0, 3600.0])
def test_a_late_take_grace_is_on_the_steady_clock(station: Station, step_s: float) -> None:
    """#22.3: ten minutes after the customer left, a wall clock stepped back an hour (or a
    day) must not make their session look just closed, so the take is not credited to them
    (it may be a stranger's lift); stepped forward, a take a moment later still is theirs."""
    slot, code = station.shelve(sf_waybill(1), phone(1))
    station.core.pickup.enter_with_code(code)
    assert station.core.exit.check([sf_waybill(1)]).allowed
    station.clock.step(step_s)
    if step_s < 0:
        station.clock.advance(600)
        station.take(slot)
        assert station.events("pickup.slot.taken") == []
        assert _alarms(station, slot) == 1
    else:
        station.clock.advance(5)
        station.take(slot)
        assert len(station.events("pickup.slot.taken")) == 1
        assert _alarms(station, slot) == 0


def test_a_timed_out_customer_counts_as_inside_on_the_steady_clock(station: Station) -> None:
    """Inside for half an hour after their session timed out, measured on the steady clock:
    a wall clock stepped back a day does not keep them inside for a day more."""
    slot, code = station.shelve(sf_waybill(1), phone(1))
    e = station.core.pickup.enter_with_code(code)
    station.clock.advance(station.config.station.pickup_session_timeout_s + 1)
    assert station.core.tick(station.clock())["sessions_timed_out"] == 1
    station.clock.step(-86400)
    station.clock.advance(60)
    assert station.core.exit._session_inside(e.session_id, station.clock()) is not None
    station.clock.advance(1800)
    assert station.core.exit._session_inside(e.session_id, station.clock()) is None
    assert station.core.exit._sessions_inside(station.clock()) == {}


def test_a_lift_from_the_owners_lit_slot_stays_open_when_the_owner_shows_another_parcel(station: Station) -> None:
    """Found by the final suite's simulator run: a stranger lifts a parcel from a slot lit for
    its owner (the take counts against the owner's session); the owner shows another parcel
    of theirs at the exit. That exit must not settle the take from the slot whose parcel was
    never shown, so the stranger's "leave without parcels" stays shut."""
    sid = station.core.shelving.open_session("c1", "guided")["session_id"]
    a, owner_code = station.shelve(sf_waybill(1), phone(1), "S", session_id=sid)
    b, _ = station.shelve(sf_waybill(2), phone(1), "L", session_id=sid)
    _, stranger_code = station.shelve(sf_waybill(3), phone(2), "S", session_id=sid)
    assert a != b
    owner = station.core.pickup.enter_with_code(owner_code)
    stranger = station.core.pickup.enter_with_code(stranger_code)
    station.take(b)                                   # the stranger's hand, in the owner's slot
    station.take(a)                                   # the owner's own
    assert station.core.exit.check([sf_waybill(1)]).allowed
    assert not station.core.exit.leave_empty_handed(stranger.session_id).allowed
    assert owner.session_id != stranger.session_id
