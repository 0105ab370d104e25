"""Courier shelving on fakes: refusals, guided/free placement, timeouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from station.config import Secrets
from station.domain.colours import ALARM_RED, COURIER_WHITE, PALETTE_HEX
from station.domain.errors import InvalidPhone, StationFull, UnknownCarrier
from station.domain.layout import SlotAddress
from station.flows.errors import FlowError

from .harness import Station, config_for, make_station, phone, sf_waybill, shelf


def test_station_full_refuses_the_scan_and_lights_nothing(tmp_path: Path, secrets: Secrets) -> None:
    cfg = config_for(tmp_path, shelves=[shelf(1, 1, 2, ["M"], capacity=1)])
    st = make_station(tmp_path, secrets, config=cfg)
    st.add_courier()
    sid = st.core.shelving.open_session("c1", "guided")["session_id"]
    st.shelve(sf_waybill(1), phone(1), "S", session_id=sid)
    st.shelve(sf_waybill(2), phone(2), "S", session_id=sid)
    with pytest.raises(StationFull):
        st.core.shelving.scan(sid, sf_waybill(3), phone(3), "S")
    assert st.lit_slots() == {}
    assert not st.store.query("SELECT 1 FROM pending_placements WHERE waybill = ?", (sf_waybill(3),))


def test_station_full_counts_parcels_on_their_way(tmp_path: Path, secrets: Secrets) -> None:
    """A lit but not yet placed parcel holds its place: a second courier is not sent there."""
    cfg = config_for(tmp_path, shelves=[shelf(1, 1, 1, ["M"], capacity=1)])
    st = make_station(tmp_path, secrets, config=cfg)
    st.add_courier()
    sid = st.core.shelving.open_session("c1", "guided")["session_id"]
    st.core.shelving.scan(sid, sf_waybill(1), phone(1), "S")
    with pytest.raises(StationFull):
        st.core.shelving.scan(sid, sf_waybill(2), phone(2), "S")


def test_parcel_too_large_for_every_slot_is_refused(tmp_path: Path, secrets: Secrets) -> None:
    cfg = config_for(tmp_path, shelves=[shelf(1, 1, 3, ["S"])])
    st = make_station(tmp_path, secrets, config=cfg)
    st.add_courier()
    sid = st.core.shelving.open_session("c1", "guided")["session_id"]
    with pytest.raises(StationFull):
        st.core.shelving.scan(sid, sf_waybill(1), phone(1), "L")


def test_guided_scan_lights_the_target_in_the_session_colour(station: Station) -> None:
    s = station.core.shelving.open_session("c1", "guided")
    r = station.core.shelving.scan(s["session_id"], sf_waybill(1), phone(1), "S")
    assert r.lights_acked is True
    assert station.lit_slots() == {r.slot: station.light(r.slot)}
    assert station.light(r.slot).colours == (s["colour"],)
    # couriers are guided by white: the customer palette is all for customers (ADR 0017)
    assert s["colour"] == COURIER_WHITE and COURIER_WHITE not in PALETTE_HEX
    station.put(r.slot)
    assert station.lit_slots() == {}
    parcel = station.store.query_one("SELECT * FROM parcels WHERE waybill = ?", (sf_waybill(1),))
    assert parcel["slot"] == r.slot and parcel["state"] == "shelved"
    assert station.outbox.messages[-1]["code"].startswith(r.slot + "-")


def test_wrong_slot_in_guided_mode_is_accepted_where_it_really_is(tmp_path: Path, secrets: Secrets) -> None:
    """A put away from the lit slot may be the courier's parcel or anybody's: the handheld
    asks, and only the courier's "yes, it is in 1-2-07" binds it there (docs/adr/0095)."""
    st = make_station(tmp_path, secrets, guided_mismatch="accept")
    st.add_courier()
    sid = st.core.shelving.open_session("c1", "guided")["session_id"]
    r = st.core.shelving.scan(sid, sf_waybill(1), phone(1), "S")
    other = "1-2-07" if r.slot != "1-2-07" else "1-2-08"
    st.put(other)
    assert st.store.query_one("SELECT 1 FROM parcels WHERE waybill = ?", (sf_waybill(1),)) is None
    assert st.outbox.messages == [], "a code went out before the courier confirmed the slot"
    item = st.core.shelving.item(sid, r.pending_id)
    assert item["state"] == "unverified" and item["confirm_slot"] == other
    assert st.light(other) is not None and st.light(other).colours == (COURIER_WHITE,)
    st.core.shelving.confirm(sid, r.pending_id, other)
    parcel = st.store.query_one("SELECT * FROM parcels WHERE waybill = ?", (sf_waybill(1),))
    assert parcel is not None and parcel["slot"] == other
    assert st.outbox.messages[-1]["code"].startswith(other + "-"), "the code must name the real slot"
    mismatch = st.events("parcel.placement.mismatch")
    assert len(mismatch) == 1 and other in mismatch[0]["data"]
    assert st.lit_slots() == {}


def test_wrong_slot_in_guided_mode_with_ask_move_blinks_red_and_keeps_waiting(
        tmp_path: Path, secrets: Secrets) -> None:
    st = make_station(tmp_path, secrets, guided_mismatch="ask_move")
    st.add_courier()
    sid = st.core.shelving.open_session("c1", "guided")["session_id"]
    r = st.core.shelving.scan(sid, sf_waybill(1), phone(1), "S")
    other = "1-2-07" if r.slot != "1-2-07" else "1-2-08"
    st.put(other)
    assert st.store.query_one("SELECT 1 FROM parcels WHERE waybill = ?", (sf_waybill(1),)) is None
    assert st.outbox.messages == []
    rejected = st.events("parcel.placement.rejected")
    assert len(rejected) == 1 and '"reason":"wrong_slot"' in rejected[0]["data"]
    assert st.light(other).colours == (ALARM_RED,) and st.light(other).pattern == "blink"
    assert st.light(r.slot) is not None, "the target stays lit so the courier can move the parcel"
    st.put(r.slot)  # moved to the right place
    parcel = st.store.query_one("SELECT * FROM parcels WHERE waybill = ?", (sf_waybill(1),))
    assert parcel["slot"] == r.slot


def test_duplicate_waybill_scan_is_idempotent_within_the_session(station: Station) -> None:
    sid = station.core.shelving.open_session("c1", "guided")["session_id"]
    first = station.core.shelving.scan(sid, sf_waybill(1), phone(1), "S")
    again = station.core.shelving.scan(sid, sf_waybill(1), phone(1), "S")
    assert again.repeated and again.pending_id == first.pending_id and again.slot == first.slot
    assert len(station.events("parcel.scanned")) == 1


def test_duplicate_waybill_from_another_session_is_refused(station: Station) -> None:
    station.add_courier("c2", "SF")
    s1 = station.core.shelving.open_session("c1", "guided")["session_id"]
    s2 = station.core.shelving.open_session("c2", "guided")["session_id"]
    station.core.shelving.scan(s1, sf_waybill(1), phone(1), "S")
    with pytest.raises(FlowError) as exc:
        station.core.shelving.scan(s2, sf_waybill(1), phone(1), "S")
    assert exc.value.code == "duplicate_waybill"


def test_duplicate_waybill_already_on_the_shelf_is_refused(station: Station) -> None:
    station.shelve(sf_waybill(1), phone(1))
    sid = station.core.shelving.open_session("c1", "guided")["session_id"]
    with pytest.raises(FlowError) as exc:
        station.core.shelving.scan(sid, sf_waybill(1), phone(1), "S")
    assert exc.value.code == "duplicate_waybill"


@pytest.mark.parametrize("bad", ["12345", "23812341234", "1381234123", "138123412345", "", "phone"])
def test_invalid_phone_is_refused_before_anything_is_written(station: Station, bad: str) -> None:
    sid = station.core.shelving.open_session("c1", "guided")["session_id"]
    seq = station.store.last_seq
    with pytest.raises(InvalidPhone):
        station.core.shelving.scan(sid, sf_waybill(1), bad, "S")
    assert station.store.last_seq == seq and station.lit_slots() == {}


@pytest.mark.parametrize("waybill", ["XX1234567890123", "SF123", "", "ZT12345"])
def test_unknown_carrier_is_refused(station: Station, waybill: str) -> None:
    sid = station.core.shelving.open_session("c1", "guided")["session_id"]
    with pytest.raises(UnknownCarrier):
        station.core.shelving.scan(sid, waybill, phone(1), "S")


def test_another_carriers_waybill_is_refused(station: Station) -> None:
    sid = station.core.shelving.open_session("c1", "guided")["session_id"]
    with pytest.raises(FlowError) as exc:
        station.core.shelving.scan(sid, "ZT123456789012", phone(1), "S")
    assert exc.value.code == "wrong_carrier"


def test_placement_timeout_leaves_the_parcel_unshelved_and_tells_the_courier(station: Station) -> None:
    sid = station.core.shelving.open_session("c1", "guided")["session_id"]
    r = station.core.shelving.scan(sid, sf_waybill(1), phone(1), "S")
    timeout = station.config.station.placement_timeout_s
    assert station.tick(timeout - 1)["placements_failed"] == 0
    assert station.tick(2)["placements_failed"] == 1
    assert station.lit_slots() == {}
    item = station.core.shelving.session(sid)["items"][0]
    assert item["state"] == "failed" and item["reason"] == "timeout"
    failed = station.events("parcel.placement.failed")
    assert "not shelved" in failed[0]["data"]
    # a late put no longer binds: no parcel, no code, a red blink instead
    station.put(r.slot)
    assert station.store.query_one("SELECT 1 FROM parcels") is None
    assert station.outbox.messages == []
    assert station.light(r.slot).colours == (ALARM_RED,)


def test_free_mode_binds_the_put_where_it_happens(station: Station) -> None:
    sid = station.core.shelving.open_session("c1", "free")["session_id"]
    r = station.core.shelving.scan(sid, sf_waybill(1), phone(1), "S")
    assert r.slot is None and station.lit_slots() == {}
    station.put("2-3-04")
    parcel = station.store.query_one("SELECT * FROM parcels WHERE waybill = ?", (sf_waybill(1),))
    assert parcel["slot"] == "2-3-04"


def test_free_mode_put_into_a_too_small_slot_is_rejected(station: Station) -> None:
    sid = station.core.shelving.open_session("c1", "free")["session_id"]
    station.core.shelving.scan(sid, sf_waybill(1), phone(1), "L")
    station.put("1-1-01")  # row 1 of shelf 1 is S
    assert station.store.query_one("SELECT 1 FROM parcels") is None
    assert station.light("1-1-01").colours == (ALARM_RED,)
    station.put("1-5-01")  # row 5 is L
    assert station.store.query_one("SELECT slot FROM parcels")["slot"] == "1-5-01"


def test_free_mode_never_overfills_a_slot(station: Station) -> None:
    sid = station.core.shelving.open_session("c1", "free")["session_id"]
    for n in range(3):
        station.core.shelving.scan(sid, sf_waybill(n), phone(n), "S")
        station.put("1-1-01")  # capacity 2
    assert station.store.query_one("SELECT COUNT(*) n FROM parcels WHERE slot = '1-1-01'")["n"] == 2
    rejected = station.events("parcel.placement.rejected")
    assert len(rejected) == 1 and "slot_full" in rejected[0]["data"]


def test_disabled_courier_cannot_open_a_session(station: Station) -> None:
    station.core.couriers.set_active("c1", False)
    with pytest.raises(FlowError) as exc:
        station.core.shelving.open_session("c1")
    assert exc.value.code == "courier_disabled"


def test_recipients_parcels_go_together_when_they_can(station: Station) -> None:
    sid = station.core.shelving.open_session("c1", "guided")["session_id"]
    a, _ = station.shelve(sf_waybill(1), phone(7), "S", session_id=sid)
    station.shelve(sf_waybill(2), phone(8), "S", session_id=sid)
    b, _ = station.shelve(sf_waybill(3), phone(7), "S", session_id=sid)
    assert a == b


def test_two_couriers_are_never_guided_to_one_slot(tmp_path: Path, secrets: Secrets) -> None:
    """Finding 4 of the simulator: courier A's scan lit 1-1-01 and A put the parcel beside it
    by mistake; courier B was then guided to 1-1-01 too (room for two), and B's put there
    bound A's waybill. A slot lit for one waiting scan now takes no second one."""
    cfg = config_for(tmp_path, shelves=[shelf(1, 1, 2, ["M"], capacity=2)])
    st = make_station(tmp_path, secrets, config=cfg)
    st.add_courier("a")
    st.add_courier("b")
    free = st.core.shelving.open_session("a", "free")["session_id"]
    st.core.shelving.scan(free, sf_waybill(1), phone(1), "M")
    st.put("1-1-02")                        # 1-1-02 half full, 1-1-01 empty
    st.core.shelving.close_session(free)
    sa = st.core.shelving.open_session("a", "guided")["session_id"]
    sb = st.core.shelving.open_session("b", "guided")["session_id"]
    ra = st.core.shelving.scan(sa, sf_waybill(3), phone(3), "M")
    assert ra.slot == "1-1-01"
    rb = st.core.shelving.scan(sb, sf_waybill(4), phone(4), "M")
    assert rb.slot == "1-1-02", "B was guided to the slot lit for A"
    st.put(rb.slot)
    # the two lit slots are side by side: the put could be A's, so B is asked first
    assert st.core.shelving.item(sb, rb.pending_id)["state"] == "unverified"
    st.core.shelving.confirm(sb, rb.pending_id, rb.slot)
    bound = st.store.query_one("SELECT slot FROM parcels WHERE waybill = ?", (sf_waybill(4),))
    assert bound is not None and bound["slot"] == rb.slot
    assert st.store.query_one("SELECT 1 FROM parcels WHERE waybill = ?", (sf_waybill(3),)) is None


def test_a_put_right_after_a_take_in_that_slot_is_not_bound_to_a_courier_beside_it(
        tmp_path: Path, secrets: Secrets) -> None:
    """Found by the simulator: a customer lifted another customer's parcel (the take was
    credited to the owner's open session, so no lift was recorded) and put it back; with one
    guided scan waiting elsewhere, the put-back was bound to that courier's waybill. A put
    where a hand took something out within a minute is now a put-back, not a mismatch."""
    st = make_station(tmp_path, secrets, guided_mismatch="accept")
    st.add_courier()
    sid = st.core.shelving.open_session("c1", "guided")["session_id"]
    slot, code = st.shelve(sf_waybill(1), phone(1), session_id=sid)
    st.core.pickup.enter_with_code(code)
    st.take(slot)                                   # someone's hand in the owner's slot
    r = st.core.shelving.scan(sid, sf_waybill(2), phone(2), "S")
    assert r.slot != slot
    st.put(slot)                                    # ... and the parcel goes back
    assert st.store.query_one("SELECT 1 FROM parcels WHERE waybill = ?", (sf_waybill(2),)) is None
    assert st.light(slot) is not None and ALARM_RED in st.light(slot).colours
    st.put(r.slot)                                  # the courier's parcel where it was lit
    bound = st.store.query_one("SELECT slot FROM parcels WHERE waybill = ?", (sf_waybill(2),))
    assert bound is not None and bound["slot"] == r.slot


def test_the_put_back_window_is_on_the_steady_clock(tmp_path: Path, secrets: Secrets) -> None:
    """#22.3: the wall clock jumping an hour ahead between the take and the put must not make
    the take look old, so the put is still a put-back and not bound to the courier beside it."""
    st = make_station(tmp_path, secrets, guided_mismatch="accept")
    st.add_courier()
    sid = st.core.shelving.open_session("c1", "guided")["session_id"]
    slot, code = st.shelve(sf_waybill(1), phone(1), session_id=sid)
    st.core.pickup.enter_with_code(code)
    st.take(slot)
    r = st.core.shelving.scan(sid, sf_waybill(2), phone(2), "S")
    st.clock.step(3600)
    st.clock.advance(5)
    st.put(slot)
    assert st.store.query_one("SELECT 1 FROM parcels WHERE waybill = ?", (sf_waybill(2),)) is None
    st.clock.advance(120)                           # a minute and more on the steady clock:
    st.take(slot)
    st.clock.step(-7200)                            # a step back does not make it recent
    st.clock.advance(70)
    assert not st.core.shelving._taken_from_lately(SlotAddress.parse(slot))
    assert r.slot != slot
