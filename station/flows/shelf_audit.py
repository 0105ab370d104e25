"""The shelves' own word against the station's records: a lost placement must not be a
silent difference (#22.4).

Each shelf's signed, retained state lists the slots it senses occupied and their counts. At
start and then every `interval_s`, the count the station last heard from each slot's sensor
(`slot_counts`, or what the records hold for a slot never sensed) is compared with it. A
difference seen on two audits in a row, with nothing held back by the link meanwhile, is an
event `slot.count_mismatch` and an operator alarm (one open per slot). The audit does not
correct anything itself: which parcel went where is for a person to find out."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from station.domain.layout import SlotAddress
from station.store.eventlog import Event

from . import alarms
from .context import Ctx
from .holdings import held_in

log = logging.getLogger("station.shelf_audit")

Reported = Callable[[str], dict[str, Any] | None]


class ShelfAudit:
    def __init__(self, ctx: Ctx, reported: Reported, held: Callable[[], int],
                 interval_s: float = 30.0, first_after_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ctx = ctx
        self.reported = reported
        self.held = held
        self.interval_s = interval_s
        self.clock = clock
        self._next = clock() + first_after_s
        self._suspect: dict[str, tuple[int, int]] = {}  # slot -> (recorded, reported) last time
        self._reported: set[tuple[str, int, int]] = set()  # mismatches already logged

    def due(self) -> bool:
        return self.clock() >= self._next

    def maybe_run(self) -> list[str]:
        if not self.due():
            return []
        self._next = self.clock() + self.interval_s
        return self.run()

    def differences(self) -> dict[str, tuple[int, int]]:
        """slot -> (recorded, reported) for every slot of a shelf that has reported."""
        store = self.ctx.store
        counts = {r["slot"]: r["count"] for r in store.query("SELECT slot, count FROM slot_counts")}
        out: dict[str, tuple[int, int]] = {}
        for shelf in self.ctx.layout.shelves:
            state = self.reported(shelf.device)
            if state is None:
                continue
            sensed = {(o["row"], o["col"]): int(o["count"]) for o in state.get("occupied", [])}
            for row in range(1, shelf.rows + 1):
                for col in range(1, shelf.columns + 1):
                    slot = str(SlotAddress(shelf.number, row, col))
                    recorded = counts[slot] if slot in counts else held_in(store, slot)
                    seen = sensed.get((row, col), 0)
                    if recorded != seen:
                        out[slot] = (recorded, seen)
        return out

    def run(self) -> list[str]:
        """Compare now; the slots newly reported as mismatched."""
        if self.held():  # events wait to be committed: the records are behind, not wrong
            self._suspect.clear()
            return []
        now = self.differences()
        confirmed = {s: v for s, v in now.items() if self._suspect.get(s) == v}
        self._suspect = now
        self._reported = {k for k in self._reported if now.get(k[0]) == (k[1], k[2])}
        fresh = {s: v for s, v in confirmed.items() if (s, *v) not in self._reported}
        if not fresh:
            return []
        with self.ctx.store.transaction() as tx:
            for slot, (recorded, seen) in sorted(fresh.items()):
                tx.emit(Event("slot.count_mismatch", slot, "station",
                              {"slot": slot, "recorded": recorded, "reported": seen}))
                alarms.raise_once(tx, "slot.count_mismatch", slot,
                                  f"slot {slot}: the shelf senses {seen}, the records say {recorded}")
        self._reported |= {(s, *v) for s, v in fresh.items()}
        log.warning("shelf counts differ from the records: %s", sorted(fresh))
        return sorted(fresh)
