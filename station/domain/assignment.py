"""Slot assignment for guided shelving.

Rules, in order: the slot must take the parcel's size (same class, or the next larger one
when none of the same class is free) and have room; a slot lit for one waiting scan is lit
for no other (a sensed put names a slot, not a parcel: with two scans aimed at one slot the
station could not tell which parcel went in); one recipient's parcels go together
when they can (fewer slots to walk to, one light); otherwise spread the load: prefer the
emptiest slot, then the emptier shelf (people and light commands spread over the shelves
instead of crowding the first), then the lower-numbered shelf and row for a stable,
explainable choice."""

from __future__ import annotations

from collections.abc import Mapping

from .errors import StationFull
from .layout import SIZE_ORDER, Layout, Slot, SlotAddress


def fits(slot: Slot, size: str) -> bool:
    return SIZE_ORDER[slot.size] >= SIZE_ORDER[size]


def choose_slot(
    layout: Layout,
    occupancy: Mapping[SlotAddress, int],
    size: str,
    recipient_slots: Mapping[SlotAddress, int] | None = None,
    *,
    outbound: bool = False,
    reserved: Mapping[SlotAddress, int] | None = None,
) -> SlotAddress:
    """Pick a slot for one parcel.

    occupancy: parcels currently in (or bound to) each slot; reserved: parcels on their way to
    a slot (lit, not yet placed): such a slot takes no second scan until the first is placed
    or given up; recipient_slots: where this recipient already has parcels waiting."""
    if size not in SIZE_ORDER:
        raise ValueError(f"unknown size class {size!r}")
    reserved = reserved or {}

    def load(slot: Slot) -> int:
        return occupancy.get(slot.address, 0) + reserved.get(slot.address, 0)

    candidates = [
        s for s in layout if s.outbound == outbound and fits(s, size) and load(s) < s.capacity
        and not reserved.get(s.address, 0)
    ]
    if not candidates:
        kind = "outbound" if outbound else "inbound"
        raise StationFull(f"no free {kind} slot takes a parcel of size {size}")
    if recipient_slots:
        together = [s for s in candidates if recipient_slots.get(s.address, 0) > 0]
        if together:
            return min(together, key=lambda s: (SIZE_ORDER[s.size], load(s), s.address)).address
    shelf_load: dict[int, int] = {}
    for slot in layout:
        shelf_load[slot.address.shelf] = shelf_load.get(slot.address.shelf, 0) + load(slot)
    return min(
        candidates,
        key=lambda s: (SIZE_ORDER[s.size] - SIZE_ORDER[size], load(s) / s.capacity,
                       shelf_load[s.address.shelf], s.address),
    ).address
