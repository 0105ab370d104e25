"""What the records say lies in the slots: one query shape for every flow that asks."""

from __future__ import annotations

from station.domain.layout import SlotAddress
from station.domain.parcels import ON_SHELF, ParcelState
from station.store.db import Store

# parcels that occupy their slot; assignment also keeps a missing parcel's place until an
# audit settles it
_ON_SHELF = ",".join(f"'{s.value}'" for s in sorted(ON_SHELF))
_HOLDING = ",".join(f"'{s.value}'" for s in sorted(ON_SHELF | {ParcelState.MISSING}))


def held_in(store: Store, slot: SlotAddress | str, *, keep_missing: bool = False) -> int:
    """Parcels the records place in `slot` right now."""
    states = _HOLDING if keep_missing else _ON_SHELF
    row = store.query_one(
        f"SELECT COUNT(*) n FROM parcels WHERE slot = ? AND state IN ({states})", (str(slot),))
    return int(row["n"])


def held_by_slot(store: Store, *, keep_missing: bool = False) -> dict[str, int]:
    """Printed slot -> parcels there, for every slot holding any."""
    states = _HOLDING if keep_missing else _ON_SHELF
    return {r["slot"]: r["n"] for r in store.query(
        f"SELECT slot, COUNT(*) n FROM parcels WHERE state IN ({states}) GROUP BY slot")}


def reserved_in(store: Store, slot: SlotAddress | str) -> int:
    """Guided scans waiting to be put into `slot` (lit, not yet placed), and puts sensed in
    `slot` that wait for their courier's confirmation (the parcel is there, unbound)."""
    row = store.query_one(
        "SELECT (SELECT COUNT(*) FROM pending_placements WHERE state = 'waiting' AND target_slot = ?)"
        " + (SELECT COUNT(*) FROM pending_placements WHERE state = 'unverified' AND put_slot = ?) n",
        (str(slot), str(slot)))
    return int(row["n"])
