"""Slot assignment for guided shelving.

Rules, in order: the slot must take the parcel's size (same class, or the next larger one
when none of the same class is free) and have room; a slot lit for one waiting scan is lit
for no other (a sensed put names a slot, not a parcel: with two scans aimed at one slot the
station could not tell which parcel went in); one recipient's parcels go together
when they can (fewer slots to walk to, one light); otherwise spread the load: among the
slots of the smallest size class that fits, prefer one out of a hand's reach of another
courier's lit slot (`crowded`: a put there could be either courier's, and the station would
have to ask, docs/adr/0095), then the emptiest slot, then the emptier shelf (people and light commands spread over the shelves
instead of crowding the first), then the lower-numbered shelf and row for a stable,
explainable choice.

Reachable rows (#19.5, ADR 0154): a recipient flagged as needing a slot within reach gets one
in the reachable rows whenever one is free, before every other preference (a larger slot
there beats a snug one they cannot reach; their parcels go together only among reachable
slots); with none free, any slot, and the caller notes it. Everyone else keeps the
reachable slots free: among the slots of the smallest fitting size class, one outside
the reachable rows is taken first, so the flag does not starve once the shelves fill."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from .errors import StationFull
from .layout import SIZE_ORDER, Layout, Slot, SlotAddress

# a hand that misses its slot lands in one beside it (left, right, above, below or
# diagonal), never two away: the radius within which a sensed put could be another
# slot's parcel (docs/adr/0095)
HAND_RADIUS = 1


def fits(slot: Slot, size: str) -> bool:
    return SIZE_ORDER[slot.size] >= SIZE_ORDER[size]


def within_reach(a: SlotAddress, b: SlotAddress, radius: int = HAND_RADIUS) -> bool:
    """Could a hand aimed at `a` land in `b`? Same shelf, at most `radius` rows and columns
    apart (`a` itself included)."""
    return a.shelf == b.shelf and abs(a.row - b.row) <= radius and abs(a.col - b.col) <= radius


def reach_of(slots: Iterable[SlotAddress], radius: int = HAND_RADIUS) -> set[SlotAddress]:
    """Every address within a hand's reach of any of `slots` (the layout filters them)."""
    out: set[SlotAddress] = set()
    for a in slots:
        for dr in range(-radius, radius + 1):
            for dc in range(-radius, radius + 1):
                row, col = a.row + dr, a.col + dc
                if 1 <= row <= 9 and 1 <= col <= 99:
                    out.add(SlotAddress(a.shelf, row, col))
    return out


def choose_slot(
    layout: Layout,
    occupancy: Mapping[SlotAddress, int],
    size: str,
    recipient_slots: Mapping[SlotAddress, int] | None = None,
    *,
    outbound: bool = False,
    reserved: Mapping[SlotAddress, int] | None = None,
    crowded: Collection[SlotAddress] = (),
    reachable: Collection[SlotAddress] = (),
    needs_reachable: bool = False,
) -> SlotAddress:
    """Pick a slot for one parcel.

    occupancy: parcels currently in (or bound to) each slot; reserved: parcels on their way to
    a slot (lit, not yet placed): such a slot takes no second scan until the first is placed
    or given up; recipient_slots: where this recipient already has parcels waiting; crowded:
    slots within a hand's reach of another courier's lit slot, used only when no slot of the
    same size class is clear of them; reachable: the slots in the configured reachable rows
    (empty: no such rows), wanted by a recipient who `needs_reachable` and kept free by the
    others (module docstring)."""
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
    if needs_reachable:
        within = [s for s in candidates if s.address in reachable]
        candidates = within or candidates  # none free within reach: any slot (caller notes it)
    if recipient_slots:
        together = [s for s in candidates if recipient_slots.get(s.address, 0) > 0]
        if together:
            return min(together, key=lambda s: (SIZE_ORDER[s.size], load(s), s.address)).address
    shelf_load: dict[int, int] = {}
    for slot in layout:
        shelf_load[slot.address.shelf] = shelf_load.get(slot.address.shelf, 0) + load(slot)
    keep_free = not needs_reachable
    return min(
        candidates,
        key=lambda s: (SIZE_ORDER[s.size] - SIZE_ORDER[size], s.address in crowded,
                       keep_free and s.address in reachable,
                       load(s) / s.capacity, shelf_load[s.address.shelf], s.address),
    ).address


def reachable_slots(layout: Layout, rows: Sequence[int]) -> frozenset[SlotAddress]:
    """The inbound slots in rows `rows[0]`..`rows[1]` (inclusive) of every shelf; none when
    no range is configured."""
    if not rows:
        return frozenset()
    first, last = rows[0], rows[-1]
    return frozenset(s.address for s in layout
                     if not s.outbound and first <= s.address.row <= last)
