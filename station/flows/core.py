"""The station's use cases wired together, plus what reacts to the devices and the clock.

`StationCore` is what the API, the CLI and the simulator drive. It owns no connection:
the device link, the outbox and the vision engine are handed in (bootstrap.py)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeGuard

from station.domain.errors import InvalidSlotAddress
from station.domain.layout import SlotAddress
from station.store.db import StoreError
from station.store.eventlog import Event

from . import alarms, guard
from .accounts import Accounts
from .care import Extensions, Reports
from .context import Ctx
from .couriers import Couriers
from .device_log import already_logged, is_trace
from .exit import ExitCheck
from .holdings import held_in
from .lights import LightSync
from .pickup import Pickup
from .reachable import Reachable
from .returns import RUN_TTL_S, Returns
from .shelf_audit import ShelfAudit
from .shelving import Placement, Shelving

log = logging.getLogger("station.core")

# the longest a slot blinks red for one cause (flows set 10-15 s): what a wall-clock step back
# can never stretch an alarm beyond
SLOT_ALARM_MAX_S = 60.0

# device event kinds that are alarms in their own right
# (one open alarm per kind and device: a flood of them is one alarm, each still an event)
ALARM_KINDS = {"door.forced_open", "door.held_open", "door.emergency_release"}


@dataclass
class PlacementOutcome:
    slot: str
    action: str
    # bound | unverified | rejected | pickup_take | return_take | unverified_take | dropoff | unexpected
    # | already_taken (a boot's state had reported it)
    result: str
    placement: Placement | None = None


class StationCore:
    def __init__(self, ctx: Ctx, trace_writer: Callable[[Event], None] | None = None) -> None:
        self.ctx = ctx
        # where command outcomes and other device traces go (device_log.py); None writes
        # each in its own transaction, as tests on fakes expect
        self.trace_writer = trace_writer
        self.lights = LightSync(ctx)
        self.couriers = Couriers(ctx)
        self.accounts = Accounts(ctx)
        self.reachable = Reachable(ctx)
        self.shelving = Shelving(ctx, self.lights, self.couriers, self.reachable)
        self.pickup = Pickup(ctx, self.lights)
        self.exit = ExitCheck(ctx, self.lights)
        self.returns = Returns(ctx, self.lights, self.shelving, self.couriers)
        self.extensions = Extensions(ctx, self.returns.care)
        self.reports = Reports(ctx)
        self.placement_listeners: list[Callable[[PlacementOutcome], None]] = []
        # slot -> (boot id, count) a shelf's new boot reported and _on_shelf_boot took as a
        # change: that boot's own event for the same change, if it sent one, moves nothing
        self._boot_counts: dict[str, tuple[str, int]] = {}
        # the shelves' signed counts against the records (shelf_audit.py); bootstrap sets it
        self.audit: ShelfAudit | None = None
        self._last_refresh = float("-inf")  # steady clock

    # --- device input -------------------------------------------------------------------------

    def on_device_event(self, device: str, kind: str, data: dict[str, Any]) -> None:
        """Everything a device reports lands in the log; placements drive the flows."""
        if kind in ("online", "offline"):
            kind = f"device.{kind}"
        try:
            if kind == "placement":
                self._on_placement(device, data)
            elif kind in ("device.online", "device.offline"):
                self._on_availability(device, kind.split(".", 1)[1], data)
            elif kind == "device.rebooted" and isinstance(data.get("occupied"), list):
                self._log_device(device, kind, data)
                self._on_shelf_boot(device, data)
            else:
                self._log_device(device, kind, data)
        except StoreError:
            raise  # not committed: the link holds the event, offers it again and acknowledges
            # it to the broker only once it is taken (#22.4, docs/adr/0085)
        except Exception:  # one bad event must not stop the link's thread
            log.exception("device event %s/%s failed", device, kind)

    def _log_device(self, device: str, kind: str, data: dict[str, Any]) -> None:
        etype = kind if kind.startswith(("door.", "command.", "device.", "light", "shelf.")) else f"device.{kind}"
        event = Event(etype, device, device, _safe(data))
        if self.trace_writer is not None and is_trace(etype):
            witness = self.ctx.store.witness
            if witness is not None and etype == "door.opened":
                # the room picture of the moment the door opened, not of the batch's commit
                try:
                    event = witness(event)
                except Exception:
                    log.exception("room witness failed for %s", etype)
            self.trace_writer(event)
            return
        with self.ctx.store.transaction() as tx:
            if already_logged(tx, event):
                return  # taken before (a restart since): once, and its alarm once
            tx.emit(event)
            if kind in ALARM_KINDS:
                alarms.raise_once(tx, kind, device, f"{device}: {kind.split('.', 1)[1].replace('_', ' ')}")

    def _on_availability(self, device: str, kind: str, data: dict[str, Any]) -> None:
        with self.ctx.store.transaction() as tx:
            tx.emit(Event(f"device.{kind}", device, device, {"device": device, **_safe(data)}))
            if kind == "offline" and device in (self.ctx.config.doors.entry, self.ctx.config.doors.exit):
                alarms.raise_once(tx, "device.offline", device, f"{device} went offline")
        if kind == "online" and device in self.ctx.config.shelf_devices:
            self.lights.refresh([device], force=True)

    def _on_shelf_boot(self, device: str, data: dict[str, Any]) -> None:
        """A shelf's new boot reports what it senses; where that differs from what the
        station last heard, the change happened unsent (lost with the old boot's memory, or
        made while it was off) and is taken as the put or take it is, through the same path
        as a sensed one: a lift holds the exit, a recipient's take counts as their pickup."""
        shelf = self.ctx.layout.shelf_of_device(device)
        boot_id = data.get("boot_id")
        if shelf is None or not isinstance(boot_id, str):
            return
        # a state that contradicts itself or the layout moves nothing where it does: an entry
        # outside this shelf's rows and columns (or not a count) is ignored, and a slot listed
        # twice with two counts keeps what the station knew (neither count can be trusted to
        # make a take, which may close someone's pickup). One event says so, however many.
        sensed: dict[tuple[int, int], int] = {}
        listed_twice: set[tuple[int, int]] = set()
        ignored: list[str] = []
        for o in data["occupied"]:
            cell = _occupied_cell(o, shelf.rows, shelf.columns)
            if cell is None:
                ignored.append(repr(o)[:80])
                continue
            if cell[:2] in sensed and sensed[cell[:2]] != cell[2]:
                listed_twice.add(cell[:2])
            sensed[cell[:2]] = cell[2]
        if ignored or listed_twice:
            self._log_device(device, "placement.invalid", {
                "boot_id": boot_id, "reason": "boot state entries not taken", "ignored": len(ignored),
                "sample": " | ".join(ignored[:3]),
                "listed_twice": ",".join(f"{r}-{c}" for r, c in sorted(listed_twice))})
        counts = {r["slot"]: r["count"] for r in self.ctx.store.query("SELECT slot, count FROM slot_counts")}
        for row in range(1, shelf.rows + 1):
            for col in range(1, shelf.columns + 1):
                if (row, col) in listed_twice:
                    continue
                slot = SlotAddress(shelf.number, row, col)
                key = str(slot)
                before = counts[key] if key in counts else held_in(self.ctx.store, slot)
                now = sensed.get((row, col), 0)
                if now == before:
                    continue
                self._on_placement(device, {"row": row, "col": col, "count": now,
                                            "action": "put" if now > before else "take"},
                                   evt=f"{device}/{boot_id}/boot/{row}-{col}")
                self._boot_counts[key] = (boot_id, now)

    def _on_placement(self, device: str, data: dict[str, Any],
                      evt: str | None = None) -> PlacementOutcome | None:
        shelf = self.ctx.layout.shelf_of_device(device)
        if shelf is None:
            self._log_device(device, "placement.unknown_device", data)
            return None
        try:
            slot = SlotAddress(shelf.number, int(data["row"]), int(data["col"]))
            self.ctx.layout.slot(slot)
        except (KeyError, TypeError, ValueError, InvalidSlotAddress):
            self._log_device(device, "placement.invalid", data)
            return None
        action = data.get("action")
        # the broker redelivers what the station may already have taken (QoS 1, persistent
        # session across a crash): a device event is acted on once, by boot id and evt seq
        if evt is None and "boot_id" in data and "evt_seq" in data:
            evt = f"{device}/{data['boot_id']}/{data['evt_seq']}"
        with self.ctx.lock:
            if evt and self.ctx.store.query_one("SELECT 1 FROM sensed WHERE evt = ?", (evt,)):
                return None
            # what was sensed and what it caused commit together: a crash between them would
            # leave the event marked as seen and its binding lost when the broker redelivers
            n, before = self._items_moved(slot, str(action), data.get("count"))
            if self._boot_counts.pop(str(slot), None) == (data.get("boot_id"), data.get("count")) \
                    and before == data.get("count"):
                n = 0  # sent before the boot's state was: already taken from that state
            outcome = PlacementOutcome(str(slot), str(action), "already_taken")
            with self.ctx.store.transaction() as tx:
                tx.emit(Event("slot.sensed", str(slot), device, {
                    "slot": str(slot), "action": action, "count": data.get("count"), "evt": evt,
                    "items": n, **self.ctx.stamp().as_data()}))
                for _ in range(n):
                    outcome = self._route(slot, str(action), data.get("count"), items=n, before=before)
        # outside the station lock: LightSync orders its own sends, and the lock is what
        # every request and the device link's thread queue for
        self.lights.refresh(self.lights.devices_of([slot]))
        for listener in list(self.placement_listeners):
            try:
                listener(outcome)
            except Exception:
                log.exception("placement listener failed")
        return outcome

    def _items_moved(self, slot: SlotAddress, action: str, count: Any) -> tuple[int, int | None]:
        """How many parcels one debounced sensor change stands for (two parcels lifted
        together arrive as one event whose count fell by two), and the sensed count before
        it (None when the device sends no count or the slot was never sensed)."""
        if not isinstance(count, int) or isinstance(count, bool):
            return 1, None
        row = self.ctx.store.query_one("SELECT count FROM slot_counts WHERE slot = ?", (str(slot),))
        # never sensed since the database began: what the records say is there
        before = row["count"] if row is not None else held_in(self.ctx.store, slot)
        delta = count - before if action == "put" else before - count
        return max(1, min(delta, self.ctx.layout.slot(slot).capacity)), \
            (row["count"] if row is not None else None)

    def _route(self, slot: SlotAddress, action: str, count: Any = None, *, items: int = 1,
               before: int | None = None) -> PlacementOutcome:
        if action == "put":
            if self.reports.on_put(str(slot)):
                return PlacementOutcome(str(slot), action, "refused_put_back")
            if self._lifted(slot) and not self._above_record(slot, count):
                # a parcel lifted from a slot nobody should touch and put back: the sensor
                # cannot say whose parcel went in, and a put-back is far likelier than a
                # courier's parcel landing in that very slot at that moment
                with self.ctx.store.transaction() as tx:
                    # while a courier holds a parcel to place, the item put in may be theirs:
                    # the lift stays open for the exit until an operator looks (ADR 0075)
                    data: dict[str, Any] = {"slot": str(slot)}
                    if self.shelving.placement_waiting():
                        data["ambiguous"] = True
                    tx.emit(Event("slot.put_back", str(slot), "station", data))
                    tx.emit(Event("slot.alarm.cleared", str(slot), "station", {"slot": str(slot)}))
                return PlacementOutcome(str(slot), action, "put_back")
            if self.pickup.on_put_back(slot, count):
                return PlacementOutcome(str(slot), action, "put_back")
            if self.ctx.layout.slot(slot).outbound:
                parcel = self.returns.on_outbound_put(slot)
                if parcel:
                    return PlacementOutcome(str(slot), action, "dropoff")
            found = self.shelving.attribute_put(slot, items, before)
            if found.pending is not None:
                placed = self.shelving.on_put(slot, found.pending, found.doubt)
                result = "bound" if placed else "unverified" if found.doubt and \
                    self.shelving.awaits_confirmation(found.pending["id"]) else "rejected"
                return PlacementOutcome(str(slot), action, result, placed)
            self._unexpected(slot, "unexpected_put")
            return PlacementOutcome(str(slot), action, "unexpected")
        if action == "take":
            if self.pickup.on_take(slot):
                return PlacementOutcome(str(slot), action, "pickup_take")
            if self.returns.on_take(slot):
                return PlacementOutcome(str(slot), action, "return_take")
            if self.shelving.on_take_of_unverified(slot):
                return PlacementOutcome(str(slot), action, "unverified_take")
            self._unexpected(slot, "unexpected_take", count)
            return PlacementOutcome(str(slot), action, "unexpected")
        self._log_device(self.ctx.device_of(slot), "placement.invalid", {"slot": str(slot), "action": action})
        return PlacementOutcome(str(slot), action, "unexpected")

    def _below_record(self, slot: SlotAddress, count: Any) -> bool:
        if not isinstance(count, int) or isinstance(count, bool):
            return True
        return count < held_in(self.ctx.store, slot)

    def _above_record(self, slot: SlotAddress, count: Any) -> bool:
        """More items than the records hold: the put brought something new, not a put-back."""
        if not isinstance(count, int) or isinstance(count, bool):
            return False
        return count > held_in(self.ctx.store, slot)

    def _lifted(self, slot: SlotAddress) -> bool:
        row = self.ctx.store.query_one("SELECT n FROM slot_lifts WHERE slot = ?", (str(slot),))
        return bool(row and row["n"] > 0)

    def _unexpected(self, slot: SlotAddress, reason: str, count: Any = None) -> None:
        """A parcel lifted from (or put into) a slot nobody should touch: blink red, log it.

        A take that leaves fewer items than the records hold lifted a recorded parcel, and the
        next put there is its put-back; a take that leaves as many (a courier taking out a
        parcel the station refused) is no lift."""
        with self.ctx.store.transaction() as tx:
            if reason == "unexpected_take" and self._below_record(slot, count):
                tx.emit(Event("slot.lifted", str(slot), "station", {"slot": str(slot)}))
            elif reason == "unexpected_take":
                # the slot held an item the records do not know (a refused courier parcel):
                # no put-back is expected for it, but nobody's lights explain the hand that
                # took it either, so the exit waits for it like for a lift (ADR 0075)
                tx.emit(Event("slot.take.unrecorded", str(slot), "station", {"slot": str(slot)}))
            elif self._open_unrecorded_take(slot) and not self.shelving.placement_waiting():
                # an item into a slot whose unrecorded take is open: it came back
                tx.emit(Event("slot.take.returned", str(slot), "station", {"slot": str(slot)}))
            tx.emit(Event("slot.alarm", str(slot), "station",
                          {"slot": str(slot), "until": tx.now + 15.0, "reason": reason}))
            guard.raise_alarm(tx, f"slot.{reason}", str(slot), f"slot {slot}: {reason.replace('_', ' ')}")

    def _open_unrecorded_take(self, slot: SlotAddress) -> bool:
        return self.ctx.store.query_one(
            "SELECT 1 FROM takes WHERE slot = ? AND session_id IS NULL AND resolved_seq IS NULL",
            (str(slot),)) is not None

    # --- the clock ------------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> dict[str, int]:
        """Timeouts and expiries; called every half second by the service."""
        now = self.ctx.clock() if now is None else now
        done = {
            "placements_failed": self.shelving.expire_placements(now),
            "sessions_timed_out": self.pickup.expire_sessions(now),
            "parcels_expired": self.returns.expire_due(now),
            "alarms_cleared": self._clear_slot_alarms(now),
        }
        self._close_stale_runs(now)
        reminded = self.returns.care.send_reminders(now)
        if self.audit is not None:
            self.audit.maybe_run()
        steady = self.ctx.mono()
        force = steady - self._last_refresh > 60.0
        if any(done.values()) or force:
            self.lights.refresh(force=force)
            if force:
                self._last_refresh = steady
        done["reminders_queued"] = reminded
        return done

    def _clear_slot_alarms(self, now: float) -> int:
        lit = self.ctx.store.query("SELECT slot, until FROM slot_alarms")
        rows = self.ctx.due("alarm", lit, "slot", "until", now, SLOT_ALARM_MAX_S)  # ADR 0070
        cleared = 0
        if rows:
            with self.ctx.lock, self.ctx.store.transaction() as tx:
                for r in rows:  # unless put back or raised again since the read
                    if tx.execute("SELECT 1 FROM slot_alarms WHERE slot = ? AND until = ?",
                                  (r["slot"], r["until"])).fetchone():
                        tx.emit(Event("slot.alarm.cleared", r["slot"], "station", {"slot": r["slot"]}))
                        cleared += 1
        return cleared

    def _close_stale_runs(self, now: float) -> None:
        runs = self.ctx.store.query(
            "SELECT id, kind, expires_at FROM sessions WHERE state = 'open' AND kind IN ('return','dropoff')")
        rows = self.ctx.due("run", runs, "id", "expires_at", now,
                            max(RUN_TTL_S, self.ctx.config.station.placement_timeout_s))  # ADR 0070
        if rows:
            with self.ctx.lock, self.ctx.store.transaction() as tx:
                for r in rows:  # unless the courier closed it since the read
                    if tx.execute("SELECT 1 FROM sessions WHERE id = ? AND state = 'open'",
                                  (r["id"],)).fetchone():
                        tx.emit(Event(f"{r['kind']}.closed", r["id"], "station",
                                      {"session_id": r["id"], "reason": "timeout"}))


class Ticker:
    """Calls `core.tick()` on its own thread until stopped."""

    def __init__(self, core: StationCore, interval: float = 0.5) -> None:
        self.core = core
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="station-ticker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.core.tick()
            except Exception:
                log.exception("tick failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)


def _safe(data: dict[str, Any]) -> dict[str, Any]:
    """Device data as it may enter the log: JSON-safe and bounded."""
    out: dict[str, Any] = {}
    for key, value in list(data.items())[:32]:
        name = _utf8(str(key)[:64])
        if isinstance(value, (str, int, float, bool)) or value is None:
            out[name] = value if not isinstance(value, str) else _utf8(value[:256])
        else:
            out[name] = _utf8(str(value)[:256])
    return out


def _utf8(text: str) -> str:
    """What UTF-8 cannot carry (a lone surrogate) as its escape: the log must take it."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _occupied_cell(o: Any, rows: int, columns: int) -> tuple[int, int, int] | None:
    """(row, col, count) of one entry of a boot state's `occupied` list, or None when it is
    not whole numbers inside the shelf (a bool is no number here)."""
    if not isinstance(o, dict):
        return None
    row, col, count = o.get("row"), o.get("col"), o.get("count")
    if not (_whole(row) and _whole(col) and _whole(count)):
        return None
    if not (1 <= row <= rows and 1 <= col <= columns and count >= 0):
        return None
    return row, col, count


def _whole(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)
