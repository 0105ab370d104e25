"""Reachable rows in slot assignment (#19.5, ADR 0154): a flagged recipient gets a slot in
them whenever one is free, and everyone else leaves them free while a slot elsewhere fits."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from station.domain.assignment import choose_slot, fits, reachable_slots
from station.domain.errors import StationFull
from station.domain.layout import Layout, ShelfSpec, SlotAddress

# rows top first: 1 S (high), 2 S, 3 M (reachable), 4 L (low); an outbound shelf beside
LAYOUT = Layout([
    ShelfSpec(1, 4, 3, ("S", "S", "M", "L"), 1, "shelf-1"),
    ShelfSpec(2, 4, 3, ("S", "S", "M", "L"), 1, "shelf-2"),
    ShelfSpec(9, 3, 2, ("M", "M", "L"), 1, "shelf-out", True),
])
REACH = reachable_slots(LAYOUT, [2, 3])


def full(*rows: int, shelves: tuple[int, ...] = (1, 2)) -> dict[SlotAddress, int]:
    return {SlotAddress(sh, r, c): 1 for sh in shelves for r in rows for c in (1, 2, 3)}


def test_reachable_slots_are_the_inbound_slots_of_the_configured_rows() -> None:
    assert len(REACH) == 2 * 2 * 3
    assert {a.row for a in REACH} == {2, 3} and {a.shelf for a in REACH} == {1, 2}
    assert reachable_slots(LAYOUT, []) == frozenset()


def test_a_flagged_recipient_gets_a_reachable_slot_though_a_high_one_is_free() -> None:
    got = choose_slot(LAYOUT, {}, "S", reachable=REACH, needs_reachable=True)
    assert got in REACH and got.row == 2


def test_a_flagged_recipient_takes_a_larger_reachable_slot_over_a_snug_one_out_of_reach() -> None:
    got = choose_slot(LAYOUT, full(2), "S", reachable=REACH, needs_reachable=True)
    assert got.row == 3  # an M slot within reach, not the free S slots of row 1


def test_a_flagged_recipient_falls_back_to_any_slot_when_none_within_reach_is_free() -> None:
    got = choose_slot(LAYOUT, full(2, 3), "S", reachable=REACH, needs_reachable=True)
    assert got not in REACH and got.row == 1


def test_a_flagged_recipients_parcels_go_together_only_within_reach() -> None:
    high = SlotAddress(1, 1, 1)
    got = choose_slot(LAYOUT, {high: 0}, "S", {high: 1}, reachable=REACH, needs_reachable=True)
    assert got in REACH  # not beside their earlier parcel up in row 1
    low = SlotAddress(2, 2, 3)
    occupancy = {low: 0}
    together = choose_slot(LAYOUT, occupancy, "S", {low: 1}, reachable=REACH, needs_reachable=True)
    assert together == low


def test_others_keep_the_reachable_rows_free_while_a_slot_of_their_size_fits_elsewhere() -> None:
    got = choose_slot(LAYOUT, {}, "S", reachable=REACH)
    assert got.row == 1
    occupancy = full(1)
    occupancy.pop(SlotAddress(2, 1, 3))
    assert choose_slot(LAYOUT, occupancy, "S", reachable=REACH) == SlotAddress(2, 1, 3)
    # row 1 full: the reachable S row before a larger class (the size class comes first)
    assert choose_slot(LAYOUT, full(1), "S", reachable=REACH).row == 2
    # an M parcel: row 3 is the only M row; an L one: row 4, out of the range
    assert choose_slot(LAYOUT, {}, "M", reachable=REACH).row == 3
    assert choose_slot(LAYOUT, {}, "L", reachable=REACH).row == 4


def test_no_range_configured_changes_nothing() -> None:
    for size in ("S", "M", "L"):
        for flagged in (False, True):
            assert choose_slot(LAYOUT, {}, size, reachable=(), needs_reachable=flagged) == \
                choose_slot(LAYOUT, {}, size)


def test_outbound_parcels_ignore_the_preference() -> None:
    got = choose_slot(LAYOUT, {}, "M", outbound=True, reachable=REACH, needs_reachable=True)
    assert got.shelf == 9


@settings(max_examples=150, deadline=None)
@given(st.sets(st.sampled_from(sorted(s.address for s in LAYOUT if not s.outbound))),
       st.sampled_from(["S", "M", "L"]))
def test_a_flagged_recipient_is_out_of_reach_only_when_every_reachable_slot_that_fits_is_taken(
        taken: set[SlotAddress], size: str) -> None:
    occupancy = {a: 1 for a in taken}
    try:
        got = choose_slot(LAYOUT, occupancy, size, reachable=REACH, needs_reachable=True)
    except StationFull:
        return  # the station is full for this size
    free_within = [a for a in REACH if a not in taken and fits(LAYOUT.slot(a), size)]
    assert (got in REACH) == bool(free_within)
    # and an unflagged recipient never takes a reachable slot while one of its size class
    # is free out of reach
    other = choose_slot(LAYOUT, occupancy, size, reachable=REACH)
    same_class_out = [s.address for s in LAYOUT if not s.outbound and s.address not in REACH
                      and s.address not in taken and s.size == LAYOUT.slot(other).size]
    if other in REACH:
        assert not same_class_out
