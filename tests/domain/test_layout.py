from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from station.domain.errors import InvalidSlotAddress
from station.domain.layout import Layout, ShelfSpec, SlotAddress

addresses = st.builds(SlotAddress, st.integers(1, 99), st.integers(1, 9), st.integers(1, 99))


@given(addresses)
def test_slot_address_print_parse_round_trip(addr: SlotAddress) -> None:
    text = str(addr)
    assert SlotAddress.parse(text) == addr
    assert SlotAddress.parse(f"  {text} ") == addr


def test_printed_form_pads_the_column_to_two_digits() -> None:
    assert str(SlotAddress(3, 2, 5)) == "3-2-05"
    assert str(SlotAddress(12, 9, 99)) == "12-9-99"


@given(addresses, addresses)
def test_printed_order_within_a_row_matches_address_order(a: SlotAddress, b: SlotAddress) -> None:
    if (a.shelf, a.row) == (b.shelf, b.row):
        assert (str(a) < str(b)) == (a < b)


@pytest.mark.parametrize("text", ["", "3-2", "3-2-05-1", "a-b-c", "3/2/05", "3-10-05", "100-1-01", "3--05"])
def test_malformed_addresses_say_what_is_expected(text: str) -> None:
    with pytest.raises(InvalidSlotAddress) as exc:
        SlotAddress.parse(text)
    assert "shelf-row-column" in exc.value.message or "out of range" in exc.value.message


@pytest.mark.parametrize("text", ["0-1-01", "1-0-01", "1-1-00"])
def test_out_of_range_addresses_name_the_ranges(text: str) -> None:
    with pytest.raises(InvalidSlotAddress, match="out of range"):
        SlotAddress.parse(text)


def test_parse_refuses_non_text() -> None:
    with pytest.raises(InvalidSlotAddress):
        SlotAddress.parse(305)  # type: ignore[arg-type]


def test_layout_knows_each_slot_its_size_and_device() -> None:
    layout = Layout([ShelfSpec(1, 2, 3, ("S", "L"), 2, "shelf-1"),
                     ShelfSpec(9, 1, 2, ("M",), 1, "shelf-out", True)])
    assert len(layout) == 2 * 3 + 2
    slot = layout.slot(SlotAddress(1, 2, 3))
    assert (slot.size, slot.capacity, slot.device, slot.outbound) == ("L", 2, "shelf-1", False)
    assert layout.slot(SlotAddress(9, 1, 2)).outbound
    assert SlotAddress(1, 3, 1) not in layout
    with pytest.raises(InvalidSlotAddress, match="does not exist"):
        layout.slot(SlotAddress(1, 3, 1))
    assert layout.shelf_of_device("shelf-out").number == 9
    assert layout.shelf_of_device("nope") is None
