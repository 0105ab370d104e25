from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from station.domain.assignment import choose_slot, fits
from station.domain.errors import StationFull
from station.domain.layout import SIZE_ORDER, Layout, ShelfSpec, SlotAddress

LAYOUT = Layout([
    ShelfSpec(1, 3, 2, ("S", "M", "L"), 2, "shelf-1"),
    ShelfSpec(2, 2, 2, ("S", "XL"), 1, "shelf-2"),
    ShelfSpec(9, 1, 2, ("M",), 1, "shelf-out", True),
])
SIZES = list(SIZE_ORDER)

ops = st.lists(
    st.one_of(
        st.tuples(st.just("assign"), st.sampled_from(SIZES), st.integers(0, 3), st.booleans()),
        st.tuples(st.just("reserve"), st.sampled_from(SIZES), st.integers(0, 3), st.booleans()),
        st.tuples(st.just("place"), st.integers(0, 50)),
        st.tuples(st.just("remove"), st.integers(0, 50)),
    ),
    max_size=80,
)


@settings(max_examples=200)
@given(ops)
def test_assignment_never_overfills_and_honours_size_and_direction(sequence: list[tuple]) -> None:
    occupancy: Counter[SlotAddress] = Counter()
    reserved: Counter[SlotAddress] = Counter()
    owner: dict[int, Counter[SlotAddress]] = {r: Counter() for r in range(4)}
    parcels: list[tuple[SlotAddress, int]] = []
    reservations: list[tuple[SlotAddress, int]] = []
    for op in sequence:
        if op[0] in ("assign", "reserve"):
            _, size, who, outbound = op
            candidates = [s for s in LAYOUT if s.outbound == outbound and fits(s, size)
                          and occupancy[s.address] + reserved[s.address] < s.capacity
                          and reserved[s.address] == 0]
            try:
                addr = choose_slot(LAYOUT, occupancy, size, owner[who], outbound=outbound,
                                   reserved=reserved)
            except StationFull:
                assert candidates == [], "refused although a slot had room"
                continue
            slot = LAYOUT.slot(addr)
            assert slot in candidates
            assert slot.outbound == outbound and fits(slot, size)
            mine = [s for s in candidates if owner[who][s.address] > 0]
            if mine:
                assert owner[who][addr] > 0, "the recipient's parcels were split needlessly"
            else:
                smallest = min(SIZE_ORDER[s.size] for s in candidates)
                assert SIZE_ORDER[slot.size] == smallest, "a larger slot than needed was used"
            if op[0] == "assign":
                occupancy[addr] += 1
                owner[who][addr] += 1
                parcels.append((addr, who))
            else:
                reserved[addr] += 1
                reservations.append((addr, who))
        elif op[0] == "place" and reservations:
            addr, who = reservations.pop(op[1] % len(reservations))
            reserved[addr] -= 1
            occupancy[addr] += 1
            owner[who][addr] += 1
            parcels.append((addr, who))
        elif op[0] == "remove" and parcels:
            addr, who = parcels.pop(op[1] % len(parcels))
            occupancy[addr] -= 1
            owner[who][addr] -= 1
        for s in LAYOUT:
            assert occupancy[s.address] + reserved[s.address] <= s.capacity
            assert reserved[s.address] <= 1, "two waiting scans aimed at one slot"


def test_next_larger_class_when_none_of_the_same_is_free() -> None:
    full = {s.address: s.capacity for s in LAYOUT if s.size == "S"}
    addr = choose_slot(LAYOUT, full, "S")
    assert LAYOUT.slot(addr).size == "M"


def test_load_is_spread_to_the_emptiest_slot() -> None:
    occ = {SlotAddress(1, 1, 1): 1}
    assert choose_slot(LAYOUT, occ, "S") != SlotAddress(1, 1, 1)


def test_recipient_goes_where_they_already_have_a_parcel() -> None:
    occ = {SlotAddress(1, 1, 2): 1}
    assert choose_slot(LAYOUT, occ, "S", {SlotAddress(1, 1, 2): 1}) == SlotAddress(1, 1, 2)


def test_a_reservation_holds_the_last_place() -> None:
    one_slot = Layout([ShelfSpec(1, 1, 1, ("M",), 2, "s")])
    addr = SlotAddress(1, 1, 1)
    with pytest.raises(StationFull):
        choose_slot(one_slot, {addr: 1}, "S", reserved={addr: 1})


def test_a_slot_with_a_waiting_scan_takes_no_second_one() -> None:
    """Two couriers guided to one slot: a put there could bind the wrong waybill."""
    one_slot = Layout([ShelfSpec(1, 1, 2, ("M",), 2, "s")])
    first, second = SlotAddress(1, 1, 1), SlotAddress(1, 1, 2)
    assert choose_slot(one_slot, {second: 1}, "M", reserved={first: 1}) == second
    with pytest.raises(StationFull):
        choose_slot(one_slot, {second: 2}, "M", reserved={first: 1})


def test_outbound_parcels_only_go_to_outbound_slots_and_inbound_never_do() -> None:
    assert LAYOUT.slot(choose_slot(LAYOUT, {}, "S", outbound=True)).outbound
    for size in SIZES:
        try:
            assert not LAYOUT.slot(choose_slot(LAYOUT, {}, size)).outbound
        except StationFull:
            pass


def test_unknown_size_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        choose_slot(LAYOUT, {}, "XXL")


def test_an_empty_station_fills_its_shelves_in_turn() -> None:
    """Parcels and the people who fetch them spread over the shelves, not all on shelf 1."""
    two = Layout([ShelfSpec(1, 2, 2, ("M", "M"), 2, "s1"), ShelfSpec(2, 2, 2, ("M", "M"), 2, "s2")])
    occupancy: Counter[SlotAddress] = Counter()
    shelves = []
    for _ in range(4):
        addr = choose_slot(two, occupancy, "M")
        occupancy[addr] += 1
        shelves.append(addr.shelf)
    assert shelves == [1, 2, 1, 2]
