"""Which waybill a sensed put belongs to (issue #22.10, docs/adr/0095).

A placement sensor names a slot, never a courier. The week scenario (seed 7, a6b8dee) bound
courier A's waybill to a put in A's lit slot 2-5-09 that was not A's parcel, while A's
parcel had landed in 2-5-10, lit for courier B 30 ms later, and was bound to B's waybill:
A's recipient was sent to a slot holding somebody else's parcel. The station now binds a
put only when nothing else could explain it, and otherwise asks the courier to confirm the
slot on the handheld; no pickup code goes out before that."""

from __future__ import annotations

from pathlib import Path

import pytest

from station.config import Secrets
from station.domain.colours import ALARM_RED, COURIER_WHITE
from station.domain.layout import SlotAddress
from station.flows.errors import FlowError

from .harness import Station, config_for, make_station, phone, sf_waybill, shelf


def sense(st: Station, slot: str, action: str, count: int) -> None:
    """A debounced sensor change as the shelf firmware reports it (with the slot's count)."""
    a = SlotAddress.parse(slot)
    st.clock.advance(0.1)                     # a hand is slower than the sensor's debounce
    st.core.on_device_event(st.device_of(slot), "placement",
                            {"row": a.row, "col": a.col, "action": action, "count": count,
                             "occupied": count > 0})


def free_put(st: Station, session: str, n: int, slot: str, size: str = "L") -> None:
    st.core.shelving.scan(session, sf_waybill(n), phone(n), size)
    st.put(slot)


def shelved(st: Station, waybill: str) -> str | None:
    row = st.store.query_one("SELECT slot FROM parcels WHERE waybill = ? AND state = 'shelved'", (waybill,))
    return row["slot"] if row else None


def codes_for(st: Station, n: int) -> list[dict]:
    return [m for m in st.outbox.messages if m.get("kind") == "pickup_code"
            and m["phone"] == phone(n)]


def test_week_seed_7_a_put_beside_two_couriers_lit_slots_is_asked_not_bound(
        tmp_path: Path, secrets: Secrets) -> None:
    """The exact interleaving of the week's log: a late pickup take leaves one parcel in
    2-5-09; A is guided to 2-5-09 and B to 2-5-10 within 30 ms; a put is sensed in 2-5-09
    (count 1 -> 2) and one in 2-5-10. Physically A's parcel is in 2-5-10 and the put in
    2-5-09 was somebody else's. Before the fix the first put bound A's waybill and the second
    B's, and A's recipient got a code for 2-5-09."""
    cfg = config_for(tmp_path, shelves=[
        shelf(1, 1, 2, ["S"]), shelf(2, 5, 10, ["S", "S", "S", "S", "L"], capacity=3)])
    st = make_station(tmp_path, secrets, config=cfg)
    for c in ("filler", "a", "b"):
        st.add_courier(c)
    # the room before: every L slot full but 2-5-09 (X and Y) and 2-5-10 (Z)
    fill = st.core.shelving.open_session("filler", "free")["session_id"]
    n = 100
    for col in range(1, 9):
        for _ in range(3):
            n += 1
            free_put(st, fill, n, f"2-5-{col:02d}")
    free_put(st, fill, 1, "2-5-09")                        # X
    free_put(st, fill, 2, "2-5-09")                        # Y
    free_put(st, fill, 3, "2-5-10")                        # Z
    st.core.shelving.close_session(fill)
    sense(st, "2-5-10", "put", 1)                          # the sensor agrees with the records
    # X's recipient fetches X and passes the exit before the shelf's take arrives
    x_code = codes_for(st, 1)[0]["code"]
    st.core.pickup.enter_with_code(x_code)
    assert st.core.exit.check([sf_waybill(1)]).allowed
    sense(st, "2-5-09", "take", 1)                         # the late pickup take: 1 left
    assert st.events("pickup.slot.taken")[-1]["data"].count('"late":true') == 1
    sa = st.core.shelving.open_session("a", "guided")["session_id"]
    sb = st.core.shelving.open_session("b", "guided")["session_id"]
    ra = st.core.shelving.scan(sa, sf_waybill(10), phone(10), "L")
    st.clock.advance(0.03)
    rb = st.core.shelving.scan(sb, sf_waybill(11), phone(11), "L")
    assert (ra.slot, rb.slot) == ("2-5-09", "2-5-10")
    sent = len(st.outbox.messages)

    sense(st, "2-5-09", "put", 2)      # not A's parcel (somebody else's, put there)
    sense(st, "2-5-10", "put", 2)      # A's parcel, beside A's lit slot, in B's

    assert shelved(st, sf_waybill(10)) is None, "A's waybill was bound to a put that was not A's"
    assert shelved(st, sf_waybill(11)) is None, "B's waybill was bound to A's parcel"
    assert len(st.outbox.messages) == sent, "a pickup code went out before anyone confirmed"
    ia, ib = st.core.shelving.item(sa, ra.pending_id), st.core.shelving.item(sb, rb.pending_id)
    assert (ia["state"], ia["confirm_slot"], ia["reason"]) == ("unverified", "2-5-09", "neighbour_lit")
    assert (ib["state"], ib["confirm_slot"], ib["reason"]) == ("unverified", "2-5-10", "neighbour_lit")
    assert "2-5-09" in ia["message"] and "no pickup code" in ia["message"]
    assert st.light("2-5-09").colours == (COURIER_WHITE,), "the slot asked about stays lit"

    # A: "my parcel is not in 2-5-09"; B: "nor is mine in 2-5-10" (still in B's hand)
    assert st.core.shelving.confirm(sa, ra.pending_id, None, "a")["state"] == "waiting"
    assert st.core.shelving.confirm(sb, rb.pending_id, None, "b")["state"] == "waiting"
    assert ALARM_RED in st.light("2-5-09").colours and ALARM_RED in st.light("2-5-10").colours
    alarms = {r["subject"] for r in st.store.query("SELECT subject FROM alarms")}
    assert {"2-5-09", "2-5-10"} <= alarms, "the puts nobody owns are the operator's to check"
    # A takes its parcel out of 2-5-10 and puts it where it was lit; B puts its own
    sense(st, "2-5-10", "take", 1)
    sense(st, "2-5-09", "put", 3)
    assert st.core.shelving.item(sa, ra.pending_id)["state"] == "unverified"   # B still lit beside
    st.core.shelving.confirm(sa, ra.pending_id, "2-5-09", "a")
    sense(st, "2-5-10", "put", 2)
    assert shelved(st, sf_waybill(10)) == "2-5-09"
    assert shelved(st, sf_waybill(11)) == "2-5-10", "with A settled, B's put binds at once"
    assert codes_for(st, 10)[0]["code"].startswith("2-5-09-")
    assert codes_for(st, 11)[0]["code"].startswith("2-5-10-")


def test_a_put_back_into_a_lit_slot_after_a_credited_take_is_asked(
        tmp_path: Path, secrets: Secrets) -> None:
    """A customer lifts another customer's parcel F (the take is credited to F's owner, who
    is inside) and puts it back into the slot now lit for a courier. The sensor was below the
    records before the put (F taken, not yet shown at the exit): the put is not bound."""
    cfg = config_for(tmp_path, shelves=[shelf(1, 1, 1, ["M"], capacity=2)])
    st = make_station(tmp_path, secrets, config=cfg)
    st.add_courier()
    slot, code = st.shelve(sf_waybill(1), phone(1), "M")          # F
    sense(st, slot, "put", 1)
    st.core.pickup.enter_with_code(code)                           # F's owner comes in
    sense(st, slot, "take", 0)                                     # somebody else lifts F
    sid = st.core.shelving.open_session("c1", "guided")["session_id"]
    r = st.core.shelving.scan(sid, sf_waybill(2), phone(2), "M")
    assert r.slot == slot
    sense(st, slot, "put", 1)                                      # ... and puts it back
    assert shelved(st, sf_waybill(2)) is None
    item = st.core.shelving.item(sid, r.pending_id)
    assert (item["state"], item["reason"]) == ("unverified", "sensor_disagrees")
    st.core.shelving.confirm(sid, r.pending_id, None)              # "not mine"
    sense(st, slot, "put", 2)                                      # the courier's parcel
    assert shelved(st, sf_waybill(2)) == slot


def test_a_put_in_a_lit_slot_with_nothing_else_near_binds_at_once(
        tmp_path: Path, secrets: Secrets) -> None:
    """The overhead stays where it was for the common case: one courier's lit slot, the
    sensor agreeing with the records, one parcel sensed."""
    st = make_station(tmp_path, secrets)
    st.add_courier("a")
    st.add_courier("b")
    sa = st.core.shelving.open_session("a", "guided")["session_id"]
    sb = st.core.shelving.open_session("b", "guided")["session_id"]
    ra = st.core.shelving.scan(sa, sf_waybill(1), phone(1), "S")
    rb = st.core.shelving.scan(sb, sf_waybill(2), phone(2), "S")
    a, b = SlotAddress.parse(ra.slot), SlotAddress.parse(rb.slot)
    assert a.shelf != b.shelf or max(abs(a.row - b.row), abs(a.col - b.col)) > 1, \
        "two couriers were lit side by side although the station had room elsewhere"
    sense(st, ra.slot, "put", 1)
    sense(st, rb.slot, "put", 1)
    assert shelved(st, sf_waybill(1)) == ra.slot and shelved(st, sf_waybill(2)) == rb.slot
    assert not st.events("parcel.placement.unverified")


def test_two_parcels_in_one_sensor_change_are_asked(tmp_path: Path, secrets: Secrets) -> None:
    st = make_station(tmp_path, secrets)
    st.add_courier()
    sid = st.core.shelving.open_session("c1", "guided")["session_id"]
    r = st.core.shelving.scan(sid, sf_waybill(1), phone(1), "S")
    sense(st, r.slot, "put", 2)
    assert st.core.shelving.item(sid, r.pending_id)["reason"] == "several_items"
    assert shelved(st, sf_waybill(1)) is None


def test_an_unconfirmed_put_taken_out_again_waits_for_the_next_put(
        tmp_path: Path, secrets: Secrets) -> None:
    st = make_station(tmp_path, secrets)
    st.add_courier()
    sid = st.core.shelving.open_session("c1", "guided")["session_id"]
    r = st.core.shelving.scan(sid, sf_waybill(1), phone(1), "S")
    other = "1-2-07" if r.slot != "1-2-07" else "1-2-08"
    st.put(other)
    assert st.core.shelving.item(sid, r.pending_id)["state"] == "unverified"
    st.take(other)                                  # the courier moves it
    assert st.core.shelving.item(sid, r.pending_id)["state"] == "waiting"
    with pytest.raises(FlowError) as exc:
        st.core.shelving.confirm(sid, r.pending_id, other)
    assert exc.value.code == "nothing_to_confirm"
    st.put(r.slot)
    assert shelved(st, sf_waybill(1)) == r.slot


def test_confirming_another_slot_than_asked_is_refused(tmp_path: Path, secrets: Secrets) -> None:
    st = make_station(tmp_path, secrets)
    st.add_courier()
    sid = st.core.shelving.open_session("c1", "guided")["session_id"]
    r = st.core.shelving.scan(sid, sf_waybill(1), phone(1), "S")
    other = "1-2-07" if r.slot != "1-2-07" else "1-2-08"
    st.put(other)
    with pytest.raises(FlowError) as exc:
        st.core.shelving.confirm(sid, r.pending_id, r.slot)
    assert exc.value.code == "wrong_slot_confirmed"
    assert shelved(st, sf_waybill(1)) is None


def test_an_unconfirmed_put_times_out_unshelved_with_an_alarm(tmp_path: Path, secrets: Secrets) -> None:
    st = make_station(tmp_path, secrets)
    st.add_courier()
    sid = st.core.shelving.open_session("c1", "guided")["session_id"]
    r = st.core.shelving.scan(sid, sf_waybill(1), phone(1), "S")
    other = "1-2-07" if r.slot != "1-2-07" else "1-2-08"
    st.put(other)
    assert st.tick(st.config.station.placement_timeout_s + 1)["placements_failed"] == 1
    item = st.core.shelving.item(sid, r.pending_id)
    assert item["state"] == "failed" and "did not confirm" in st.events("parcel.placement.failed")[0]["data"]
    assert st.store.query_one("SELECT 1 FROM alarms WHERE subject = ?", (other,)) is not None
    assert st.outbox.messages == []


@pytest.mark.parametrize("step", [+3600.0, -3600.0])
def test_a_slot_asked_about_stays_lit_until_its_timeout_whatever_the_wall_clock_did(
        tmp_path: Path, secrets: Secrets, step: float) -> None:
    """The slot the handheld asks about is lit for as long as the steady clock gives the
    placement (ADR 0070): a forward step must not darken it while the courier is asked, a
    backward one not keep it lit after the placement failed."""
    st = make_station(tmp_path, secrets)
    st.add_courier()
    sid = st.core.shelving.open_session("c1", "guided")["session_id"]
    r = st.core.shelving.scan(sid, sf_waybill(1), phone(1), "S")
    other = "1-2-07" if r.slot != "1-2-07" else "1-2-08"
    st.put(other)
    assert st.tick(0.5)["placements_failed"] == 0
    st.clock.step(step)
    st.core.lights.refresh(force=True)
    timeout = st.config.station.placement_timeout_s
    assert st.core.shelving.item(sid, r.pending_id)["state"] == "unverified"
    light = st.light(other)
    assert light is not None and light.colours == (COURIER_WHITE,), "the slot asked about went dark"
    assert st.tick(timeout)["placements_failed"] == 1
    st.core.lights.refresh(force=True)
    light = st.light(other)
    assert light is None or COURIER_WHITE not in light.colours, "the slot stayed lit after its placement failed"


def test_one_couriers_two_lit_slots_side_by_side_are_asked_too(tmp_path: Path, secrets: Secrets) -> None:
    """Found by examples/crowded.toml (seed 7): a courier whose previous parcel's slot was
    lit beside the next one's missed twice; the second parcel landed in the first one's lit
    slot and was bound as the first. One courier's two parcels swap as easily as two
    couriers' do."""
    cfg = config_for(tmp_path, shelves=[shelf(1, 1, 2, ["S"], capacity=2)])
    st = make_station(tmp_path, secrets, config=cfg)
    st.add_courier()
    sid = st.core.shelving.open_session("c1", "guided")["session_id"]
    first = st.core.shelving.scan(sid, sf_waybill(1), phone(1), "S")
    second = st.core.shelving.scan(sid, sf_waybill(2), phone(2), "S")
    assert {first.slot, second.slot} == {"1-1-01", "1-1-02"}
    sense(st, first.slot, "put", 1)             # the second parcel, in the first one's slot
    assert shelved(st, sf_waybill(1)) is None, "the first waybill was bound to the second parcel"
    item = st.core.shelving.item(sid, first.pending_id)
    assert (item["state"], item["reason"]) == ("unverified", "neighbour_lit")


def test_the_station_keeps_one_couriers_next_slot_out_of_reach_of_the_last(
        tmp_path: Path, secrets: Secrets) -> None:
    st = make_station(tmp_path, secrets)
    st.add_courier()
    sid = st.core.shelving.open_session("c1", "guided")["session_id"]
    first = st.core.shelving.scan(sid, sf_waybill(1), phone(1), "S")
    second = st.core.shelving.scan(sid, sf_waybill(2), phone(2), "S")
    a, b = SlotAddress.parse(first.slot), SlotAddress.parse(second.slot)
    assert a.shelf != b.shelf or max(abs(a.row - b.row), abs(a.col - b.col)) > 1


def test_a_put_sensed_before_the_handheld_named_the_slot_is_asked(
        tmp_path: Path, secrets: Secrets) -> None:
    """The week's 30 ms: a courier chose a dark slot that the station lit for another courier
    a moment later. A put sensed sooner after a scan's answer than the sensor's debounce was
    made before that courier knew the slot: it is not bound as theirs."""
    st = make_station(tmp_path, secrets)
    st.add_courier()
    sid = st.core.shelving.open_session("c1", "guided")["session_id"]
    r = st.core.shelving.scan(sid, sf_waybill(1), phone(1), "S")
    a = SlotAddress.parse(r.slot)
    st.clock.advance(0.03)
    st.core.on_device_event(st.device_of(r.slot), "placement",
                            {"row": a.row, "col": a.col, "action": "put", "count": 1})
    assert shelved(st, sf_waybill(1)) is None
    assert st.core.shelving.item(sid, r.pending_id)["reason"] == "before_guided"


def test_a_slot_waiting_for_a_put_back_is_not_offered_to_a_courier(
        tmp_path: Path, secrets: Secrets) -> None:
    """Found in examples/crowded.toml (seed 8, before the fix): a recorded parcel lifted out
    by a stranger left the slot waiting for its put-back; the station lit that slot for a
    courier, whose every put there was taken for the put-back, and after five puts the courier
    gave the parcel up. Such a slot is not chosen while the lift is open."""
    cfg = config_for(tmp_path, shelves=[shelf(1, 1, 2, ["S"], capacity=2)])
    st = make_station(tmp_path, secrets, config=cfg)
    st.add_courier()
    slot, _ = st.shelve(sf_waybill(1), phone(1))
    other, _ = st.shelve(sf_waybill(3), phone(3))
    assert (slot, other) == ("1-1-01", "1-1-02")     # one parcel each: equally loaded
    sense(st, slot, "put", 1)
    sense(st, slot, "take", 0)                       # nobody's take: a lift
    assert st.events("slot.lifted")
    sid = st.core.shelving.open_session("c1", "guided")["session_id"]
    r = st.core.shelving.scan(sid, sf_waybill(2), phone(2), "S")
    assert r.slot == other, "the courier was sent to a slot whose next put is a put-back"
    sense(st, r.slot, "put", 2)
    assert shelved(st, sf_waybill(2)) == r.slot
