"""Courier shelving: scan a waybill, guide or detect the slot, bind on placement, issue the
code and queue the notification — each step one transaction with its event."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from station.domain.assignment import choose_slot, fits, reach_of, within_reach
from station.domain.codes import code_digest, new_code, qr_payload
from station.domain.colours import COURIER_WHITE
from station.domain.errors import DomainError
from station.domain.layout import SIZE_ORDER, SlotAddress
from station.domain.phones import mask_phone, normalise_phone, phone_hash
from station.store.db import Tx
from station.store.eventlog import Event, EventRecord, parse_utc, utc_iso

from . import contacts, guard
from .context import Ctx, new_id
from .errors import FlowError, NotFound
from .holdings import held_by_slot, held_in, reserved_in
from .lights import LightSync
from .ports import outcome_of
from .reachable import PRE_ADVICE, Reachable

# a put this soon after a take from the same slot is taken for a put-back, not a courier's
# parcel placed beside its lit slot
PUT_BACK_WINDOW_S = 60.0

# a sensed placement arrives at least this long after the hand moved (the shelf firmware's
# debounce, firmware_stubs/shelf.py): a put sensed sooner than this after the handheld named
# the slot was made before the courier knew where to put the parcel
SENSOR_SETTLE_S = 0.05

# a scan whose parcel is on its way or sensed but not yet confirmed: where it may land is
# not settled, so a put within a hand's reach could be its parcel
UNSETTLED = "('waiting', 'unverified')"

# why a sensed put was held instead of bound: the station cannot know whose parcel it is,
# so it asks the courier to confirm the slot on the handheld (docs/adr/0095)
DOUBTS = {
    "neighbour_lit": "another courier's slot within a hand's reach was lit too",
    "beside_lit_slot": "the parcel was sensed beside its lit slot",
    "away_from_lit_slot": "the parcel was sensed away from its lit slot",
    "sensor_disagrees": "the slot's sensor and the records disagreed before this put",
    "several_items": "one sensor change counted more than one parcel",
    "before_guided": "the parcel was put before the handheld had named the slot",
}


@dataclass
class Attribution:
    """Which waiting scan a sensed put may belong to, and why it is not certain (if not)."""

    pending: dict[str, Any] | None
    doubt: str | None = None


@dataclass
class ScanResult:
    pending_id: str
    waybill: str
    carrier: str
    mode: str
    slot: str | None
    colour: str
    deadline: float
    repeated: bool = False
    lights_acked: bool | None = None
    # the recipient is flagged as needing a slot within reach (ADR 0154): whether the slot
    # named is in the reachable rows (False: none was free, the parcel goes higher or lower)
    reachable: bool | None = None


@dataclass
class Placement:
    """What a placement event did; `code` is only in memory, never stored in clear."""

    parcel_id: str
    waybill: str
    slot: str
    code: str
    pending_id: str | None
    session_id: str | None
    extras: dict[str, Any] = field(default_factory=dict)


class Shelving:
    def __init__(self, ctx: Ctx, lights: LightSync, couriers: Any,
                 reachable: Reachable | None = None) -> None:
        self.ctx = ctx
        self.lights = lights
        self.couriers = couriers
        self.reachable = reachable or Reachable(ctx)
        # long polls of one scan, woken by a commit that names it (not by every commit)
        self._watch_lock = threading.Lock()
        self._watchers: dict[str, list[threading.Event]] = {}
        # when each scan's answer (the slot to use) left the station, on the steady clock: a
        # put made before that cannot be the courier following it (memory only: after a
        # restart every scan is old enough)
        self._answered: dict[str, float] = {}
        ctx.store.subscribe(self._on_commit)

    def _on_commit(self, events: Sequence[EventRecord]) -> None:
        if not self._watchers:
            return
        for event in events:
            pending = event.data.get("pending_id") if isinstance(event.data, dict) else None
            if pending is not None:
                with self._watch_lock:
                    waiting = list(self._watchers.get(pending, ()))
                for woken in waiting:
                    woken.set()

    # --- sessions ---------------------------------------------------------------------------

    def open_session(self, courier_id: str, mode: str | None = None) -> dict[str, Any]:
        now = self.ctx.clock()
        courier = self.couriers.usable(courier_id, now)
        mode = mode or self.ctx.config.station.placement_mode
        if mode not in ("guided", "free"):
            raise FlowError("mode is guided or free", code="invalid_mode", status=422)
        with self.ctx.lock, self.ctx.store.transaction() as tx:
            session_id = new_id("shs")
            # couriers are guided by white (the handheld names the slot; one waiting scan
            # per slot makes each white slot one courier's): the eight palette colours stay
            # for customers, who are told apart only by colour (docs/adr/0017)
            colour = COURIER_WHITE
            tx.emit(Event("shelving.opened", session_id, courier_id, {
                "session_id": session_id, "courier_id": courier_id, "carrier": courier.carrier,
                "mode": mode, "colour": colour}))
        return {"session_id": session_id, "mode": mode, "colour": colour, "carrier": courier.carrier}

    def session(self, session_id: str, courier_id: str | None = None) -> dict[str, Any]:
        row = self.ctx.store.query_one(
            "SELECT * FROM sessions WHERE id = ? AND kind = 'shelving'", (session_id,))
        if row is None or (courier_id is not None and row["actor"] != courier_id):
            raise NotFound(f"no shelving session {session_id}")
        items = [_item_of(r) for r in self.ctx.store.query(
            _ITEMS + " WHERE p.session_id = ? ORDER BY p.created_at", (session_id,))]
        return {"session_id": session_id, "state": row["state"], "mode": row["mode"],
                "colour": row["colour"], "items": items}

    def item(self, session_id: str, pending_id: str, courier_id: str | None = None,
             wait_s: float = 0.0) -> dict[str, Any]:
        """One scanned parcel of a session, as the handheld shows it. With `wait_s`, answers
        as soon as the parcel is shelved or has failed (or when `wait_s` ends), so a
        handheld learns "shelved" the moment it is true without polling the whole session."""
        deadline = time.monotonic() + max(0.0, wait_s)
        woken = threading.Event()
        with self._watch_lock:
            self._watchers.setdefault(pending_id, []).append(woken)
        try:
            while True:
                woken.clear()
                found = self._item(session_id, pending_id, courier_id)
                left = deadline - time.monotonic()
                if found["state"] != "waiting" or left <= 0:
                    return found
                woken.wait(left)
        finally:
            with self._watch_lock:
                mine = self._watchers.get(pending_id, [])
                if woken in mine:
                    mine.remove(woken)
                if not mine:
                    self._watchers.pop(pending_id, None)

    def _item(self, session_id: str, pending_id: str, courier_id: str | None) -> dict[str, Any]:
        row = self.ctx.store.query_one(
            _ITEMS + " WHERE p.id = ? AND p.session_id = ? AND s.kind = 'shelving'",
            (pending_id, session_id))
        if row is None or (courier_id is not None and row["actor"] != courier_id):
            raise NotFound(f"no scan {pending_id} in shelving session {session_id}")
        return _item_of(row)

    def close_session(self, session_id: str, courier_id: str | None = None, reason: str = "done") -> None:
        self.session(session_id, courier_id)
        with self.ctx.lock, self.ctx.store.transaction() as tx:
            row = tx.execute("SELECT state FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if row[0] != "open":
                return
            for pid, put in tx.execute(
                "SELECT id, put_slot FROM pending_placements WHERE session_id = ?"
                f" AND state IN {UNSETTLED}", (session_id,)).fetchall():
                tx.emit(Event("parcel.placement.failed", pid, "station",
                              {"pending_id": pid, "reason": "session_closed"}))
                if put:
                    self._unconfirmed_alarm(tx, SlotAddress.parse(put))
            tx.emit(Event("shelving.closed", session_id, courier_id or "station",
                          {"session_id": session_id, "reason": reason}))
        self.lights.refresh()

    # --- scanning ---------------------------------------------------------------------------

    def scan(self, session_id: str, waybill: str, phone: str, size: str,
             courier_id: str | None = None, *, wait_lights: bool = True,
             needs_reachable_slot: bool | None = None) -> ScanResult:
        """`needs_reachable_slot`: the carrier's pre-advice about the recipient (ADR 0154):
        True flags them, False clears a flag this carrier's pre-advice set, None says nothing."""
        ctx = self.ctx
        ctx.store.check_room()  # the disk budget's reserve: refuse before anything is lit
        waybill = (waybill or "").strip() if isinstance(waybill, str) else ""
        if size not in SIZE_ORDER:
            raise FlowError(f"size class is one of {', '.join(SIZE_ORDER)}", code="invalid_size", status=422)
        carrier = ctx.carriers.carrier_of(waybill)
        normalise_phone(phone)
        recipient = phone_hash(phone, ctx.secrets.hash_key)
        with ctx.lock:
            session = ctx.store.query_one(
                "SELECT * FROM sessions WHERE id = ? AND kind = 'shelving'", (session_id,))
            if session is None or (courier_id is not None and session["actor"] != courier_id):
                raise NotFound(f"no shelving session {session_id}")
            if session["state"] != "open":
                raise FlowError("this shelving session is closed", code="session_closed")
            courier_carrier = ctx.store.query_one(
                "SELECT carrier FROM couriers WHERE id = ?", (session["actor"],))
            if courier_carrier and courier_carrier["carrier"] != carrier.name:
                raise FlowError(f"waybill {waybill} is a {carrier.name} parcel, not "
                                f"{courier_carrier['carrier']}", code="wrong_carrier", status=422)
            if ctx.store.query_one("SELECT 1 FROM parcels WHERE waybill = ?", (waybill,)):
                raise FlowError(f"waybill {waybill} is already at this station", code="duplicate_waybill")
            same = ctx.store.query_one(
                f"SELECT * FROM pending_placements WHERE waybill = ? AND state IN {UNSETTLED}",
                (waybill,))
            if same is not None:
                if same["session_id"] == session_id:
                    return ScanResult(same["id"], waybill, carrier.name, session["mode"],
                                      same["target_slot"], session["colour"], same["deadline"], True)
                raise FlowError(f"waybill {waybill} is being shelved by another courier",
                                code="duplicate_waybill")
            now = ctx.clock()
            target = None
            flagged = self.reachable.is_flagged(recipient)
            if needs_reachable_slot is not None:
                flagged = needs_reachable_slot or (
                    flagged and not self.reachable.cleared_by(recipient, carrier.name))
            if session["mode"] == "free" and self._other_free_waiting(session_id):
                # a sensed put names a slot, not a courier: with two free-mode scans waiting
                # at once the station could not tell whose parcel went where
                raise FlowError("Another courier is placing a parcel in free mode; wait a few "
                                "seconds or switch to guided mode.", code="free_mode_busy")
            reachable: bool | None = None
            if session["mode"] == "guided":
                chosen = self._choose(size, recipient, session_id=session_id,
                                      needs_reachable=flagged)
                target = str(chosen)
                if flagged and self.reachable.configured:
                    reachable = chosen in self.reachable.slots
            deadline = now + ctx.config.station.placement_timeout_s
            pending_id = new_id("pnd")
            data: dict[str, Any] = {
                "pending_id": pending_id, "session_id": session_id, "waybill": waybill,
                "carrier": carrier.name, "size": size, "recipient_hash": recipient,
                "phone_masked": mask_phone(phone), "target_slot": target, "deadline": deadline}
            if reachable is not None:
                # noted on the scan: a flagged recipient's parcel outside the reachable rows
                # (none was free) is one the operator may have to hand over
                data["reachable"] = reachable
            with ctx.store.transaction() as tx:
                if needs_reachable_slot is not None:
                    self.reachable.change(tx, recipient, mask_phone(phone), needs_reachable_slot,
                                          PRE_ADVICE, session["actor"], carrier.name)
                tx.emit(Event("parcel.scanned", waybill, session["actor"], data))
                contacts.save(ctx.sealer, tx, recipient, normalise_phone(phone))
            if reachable is False:
                ctx.log.warning("scan %s: no reachable slot free for a recipient who needs one;"
                                " lit %s", pending_id, target)
        handles = self.lights.refresh(self.lights.devices_of([target])) if target else []
        result = ScanResult(pending_id, waybill, carrier.name, session["mode"], target,
                            session["colour"], deadline, reachable=reachable)
        if wait_lights and handles:
            outcomes = [outcome_of(h, ctx.command_timeout) for h in handles]
            result.lights_acked = all(o.status == "acked" for o in outcomes)
        with self._watch_lock:
            self._answered[pending_id] = ctx.mono()
            if len(self._answered) > 4096:       # bounded: the oldest are long settled
                for old in list(self._answered)[:2048]:
                    del self._answered[old]
        return result

    def _choose(self, size: str, recipient: str, outbound: bool = False,
                session_id: str | None = None, needs_reachable: bool = False) -> SlotAddress:
        occupancy, reserved, mine = self._occupancy(recipient)
        # slots beside another lit slot (another courier's, or this courier's previous
        # parcel) only when nothing else fits: a put there could be either parcel, and the
        # station would have to ask (docs/adr/0095)
        crowded = reach_of(self._unsettled_slots()) if session_id else set()
        return choose_slot(self.ctx.layout, occupancy, size, mine, outbound=outbound,
                           reserved=reserved, crowded=crowded,
                           reachable=() if outbound else self.reachable.slots,
                           needs_reachable=needs_reachable)

    def _unsettled_slots(self, exclude_pending: str | None = None) -> list[SlotAddress]:
        """Where parcels on their way may land: the lit slot of each waiting scan, and the
        lit and the sensed slot of each put awaiting its courier's confirmation. A courier
        with two parcels lit side by side can swap them as easily as two couriers can."""
        out: list[SlotAddress] = []
        for r in self.ctx.store.query(
                "SELECT p.id, p.target_slot, p.put_slot FROM pending_placements p"
                f" WHERE p.state IN {UNSETTLED}"):
            if r["id"] == exclude_pending:
                continue
            out += [SlotAddress.parse(x) for x in (r["target_slot"], r["put_slot"]) if x]
        return out

    def _occupancy(self, recipient: str | None = None) -> tuple[dict[SlotAddress, int], dict[SlotAddress, int], dict[SlotAddress, int]]:
        store = self.ctx.store
        occupancy = {SlotAddress.parse(s): n for s, n in held_by_slot(store, keep_missing=True).items()}
        reserved = {SlotAddress.parse(r["slot"]): r["n"] for r in store.query(
            "SELECT CASE state WHEN 'waiting' THEN target_slot ELSE put_slot END AS slot,"
            f" COUNT(*) n FROM pending_placements WHERE state IN {UNSETTLED}"
            " AND COALESCE(put_slot, target_slot) IS NOT NULL GROUP BY 1")}
        # a slot a hand took a recorded parcel from, not yet put back, is no place for a
        # courier: its next put counts as that put-back, so a courier's parcel there would
        # never be bound (the week's 88 aborted sessions; docs/simulator.md, finding 11)
        for r in store.query("SELECT slot FROM slot_lifts WHERE n > 0"):
            lifted = SlotAddress.parse(r["slot"])
            reserved[lifted] = reserved.get(lifted, 0) + 1
        mine: dict[SlotAddress, int] = {}
        if recipient:
            mine = {SlotAddress.parse(r["slot"]): r["n"] for r in store.query(
                "SELECT slot, COUNT(*) n FROM parcels WHERE recipient_hash = ? AND state = 'shelved'"
                " GROUP BY slot", (recipient,))}
        return occupancy, reserved, mine

    # --- placement --------------------------------------------------------------------------

    def room_in(self, slot: SlotAddress, exclude_pending: str | None = None) -> int:
        """Places left in one slot (asked on every put: one slot's rows, not the station's)."""
        spec = self.ctx.layout.slot(slot)
        held = held_in(self.ctx.store, slot, keep_missing=True)
        others = reserved_in(self.ctx.store, slot)
        if exclude_pending:
            row = self.ctx.store.query_one(
                "SELECT state, target_slot, put_slot FROM pending_placements WHERE id = ?",
                (exclude_pending,))
            held_here = row and (row["put_slot"] if row["state"] == "unverified" else
                                 row["target_slot"] if row["state"] == "waiting" else None)
            if held_here == str(slot):
                others -= 1
        return spec.capacity - held - max(others, 0)

    def _other_free_waiting(self, session_id: str) -> bool:
        return self.ctx.store.query_one(
            "SELECT 1 FROM pending_placements p JOIN sessions s ON s.id = p.session_id"
            " WHERE p.state = 'waiting' AND s.state = 'open' AND s.mode = 'free'"
            " AND s.kind = 'shelving' AND p.session_id != ?", (session_id,)) is not None

    def placement_waiting(self) -> bool:
        """Is some courier (or drop-off) holding a scanned parcel it has not put down yet, or
        one whose put is still to be confirmed?"""
        return self.ctx.store.query_one(
            "SELECT 1 FROM pending_placements WHERE state IN ('waiting', 'unverified') LIMIT 1") is not None

    def attribute_put(self, slot: SlotAddress, items: int = 1,
                      before: int | None = None) -> Attribution:
        """Which waiting scan a put at `slot` belongs to, and whether that is certain.

        A sensor names a slot, never a courier. The put is bound at once only when one lit
        slot explains it and nothing else could: no other lit (or unconfirmed) slot, this
        courier's or another's, within a hand's reach, one parcel sensed, and the slot's
        sensor agreeing with the records before the put. Otherwise the scan is held `unverified` and its courier
        confirms the slot on the handheld (docs/adr/0095). `items` is how many parcels the
        sensor change stands for; `before` the sensed count before it."""
        q = self.ctx.store.query
        base = ("SELECT p.*, s.mode, s.actor AS courier_id FROM pending_placements p"
                " JOIN sessions s ON s.id = p.session_id WHERE p.state = 'waiting' AND s.state = 'open'")
        rows = q(base + " AND p.target_slot = ? ORDER BY p.created_at LIMIT 1", (str(slot),))
        if rows:
            return Attribution(rows[0], self._doubt(slot, rows[0], items, before))
        if self.ctx.layout.slot(slot).outbound:
            return Attribution(None)
        rows = q(base + " AND s.mode = 'free' ORDER BY p.created_at LIMIT 1")
        if rows:
            return Attribution(rows[0], self._doubt(slot, rows[0], items, before))
        # a put beside the lit slot is never bound at once: it may be the courier's parcel,
        # or a customer's put-back, or another courier's. Not even asked when a hand took
        # something out of that slot a moment ago: then it is far likelier a parcel put back
        # (a customer who lifted the wrong one); the courier sees red and uses the lit slot
        if self._taken_from_lately(slot):
            return Attribution(None)
        waiting = q(base + " AND s.mode = 'guided' AND p.target_slot IS NOT NULL"
                    " ORDER BY p.created_at LIMIT 64")
        near = [r for r in waiting if within_reach(SlotAddress.parse(r["target_slot"]), slot)]
        if len(near) == 1:
            others = [a for a in self._unsettled_slots(exclude_pending=near[0]["id"])
                      if within_reach(a, slot)]
            return Attribution(None if others else near[0], "beside_lit_slot")
        if not near and len(waiting) == 1:
            # one courier at work: the put is likelier theirs than nobody's, but asked
            return Attribution(waiting[0], "away_from_lit_slot")
        return Attribution(None)

    def _doubt(self, slot: SlotAddress, pending: dict[str, Any], items: int,
               before: int | None) -> str | None:
        """Why a put in the slot lit for `pending` (or any put, for a free-mode scan) might
        not be its parcel; None when nothing else could explain it."""
        if items > 1:
            return "several_items"
        with self._watch_lock:
            answered = self._answered.get(pending["id"])
        if answered is not None and self.ctx.mono() - SENSOR_SETTLE_S < answered:
            # the hand moved before the handheld named this slot: somebody else's parcel, or
            # a courier who chose the slot before its light came on (docs/adr/0095)
            return "before_guided"
        if any(within_reach(a, slot) for a in self._unsettled_slots(exclude_pending=pending["id"])):
            return "neighbour_lit"
        if before is not None:
            expected = held_in(self.ctx.store, slot) + self._held_unverified(slot)
            if before != expected:
                # something the records cannot explain is (or is not) in the slot: a stuck
                # sensor catching up, a parcel lifted and not yet shown at the exit
                return "sensor_disagrees"
        return None

    def _held_unverified(self, slot: SlotAddress) -> int:
        row = self.ctx.store.query_one(
            "SELECT COUNT(*) n FROM pending_placements WHERE state = 'unverified' AND put_slot = ?",
            (str(slot),))
        return int(row["n"])

    def _taken_from_lately(self, slot: SlotAddress) -> bool:
        """A take sensed in `slot` within the put-back window, on the steady clock (a sensed
        change is stamped on both clocks; one logged before that, on its wall-clock time)."""
        now = self.ctx.stamp()
        for row in self.ctx.store.query(
                "SELECT ts, data FROM events WHERE subject = ? AND type = 'slot.sensed'"
                " ORDER BY seq DESC LIMIT 8", (str(slot),)):
            data = json.loads(row["data"])
            if not self.ctx.within(data.get("wall", parse_utc(row["ts"])), data.get("boot"),
                                   data.get("mono"), PUT_BACK_WINDOW_S, now):
                break
            if data.get("action") == "take":
                return True
        return False

    def on_put(self, slot: SlotAddress, pending: dict[str, Any],
               doubt: str | None = None) -> Placement | None:
        """Bind `pending` to `slot` if the slot may take it and nothing else could explain the
        put; hold it for the courier's confirmation when something could (`doubt`); else
        blink red and tell why."""
        ctx = self.ctx
        spec = ctx.layout.slot(slot)
        mismatch = pending["target_slot"] is not None and pending["target_slot"] != str(slot)
        problem = None
        if spec.outbound:
            problem = "outbound_slot"
        elif not fits(spec, pending["size"]):
            problem = "too_small"
        elif self.room_in(slot, exclude_pending=pending["id"]) <= 0:
            problem = "slot_full"
        elif mismatch and ctx.config.station.guided_mismatch == "ask_move":
            problem = "wrong_slot"
        if problem:
            with ctx.store.transaction() as tx:
                tx.emit(Event("parcel.placement.rejected", pending["waybill"], "station", {
                    "pending_id": pending["id"], "slot": str(slot), "reason": problem,
                    "target_slot": pending["target_slot"]}))
                self._alarm_light(tx, slot, problem)
            return None
        if doubt is not None:
            with ctx.store.transaction() as tx:
                # no parcel, no code: the handheld asks "is it in this slot?" (docs/adr/0095)
                tx.emit(Event("parcel.placement.unverified", pending["waybill"], "station", {
                    "pending_id": pending["id"], "slot": str(slot),
                    "target_slot": pending["target_slot"], "reason": doubt}))
            return None
        with ctx.store.transaction() as tx:
            if mismatch:
                tx.emit(Event("parcel.placement.mismatch", pending["waybill"], "station", {
                    "pending_id": pending["id"], "slot": str(slot),
                    "target_slot": pending["target_slot"], "resolution": "accepted"}))
            placed = self._bind(tx, slot, pending)
        return placed

    def confirm(self, session_id: str, pending_id: str, slot: str | None,
                courier_id: str | None = None) -> dict[str, Any]:
        """The courier's answer to "is the parcel in this slot?": `slot` names the slot the
        handheld asked about (yes: bound there, the code goes out), None says no (the sensed
        put is nobody's: red for the room, an alarm for the operator; the scan waits again
        and the courier puts the parcel in the lit slot)."""
        ctx = self.ctx
        self._item(session_id, pending_id, courier_id)
        with ctx.lock:
            row = ctx.store.query_one(
                "SELECT p.*, s.actor AS courier_id, s.state AS session_state FROM pending_placements p"
                " JOIN sessions s ON s.id = p.session_id WHERE p.id = ?", (pending_id,))
            if row["state"] == "placed":
                return self._item(session_id, pending_id, courier_id)  # answered twice
            if row["state"] != "unverified" or row["session_state"] != "open":
                raise FlowError("this parcel is not waiting for a confirmation",
                                code="nothing_to_confirm")
            put = SlotAddress.parse(row["put_slot"])
            if slot is not None and slot != row["put_slot"]:
                raise FlowError(f"the handheld asked about slot {row['put_slot']}, not {slot}",
                                code="wrong_slot_confirmed", status=422)
            with ctx.store.transaction() as tx:
                if slot is None:
                    self._release(tx, row, "courier_disowned")
                    self._alarm_light(tx, put, "unexpected_put", 15.0)
                    guard.raise_alarm(tx, "slot.unexpected_put", str(put),
                                      f"slot {put}: a put nobody confirmed")
                elif self.room_in(put, exclude_pending=pending_id) <= 0:
                    raise FlowError(f"slot {put} is full", code="slot_full")
                else:
                    tx.emit(Event("parcel.placement.confirmed", row["waybill"], row["courier_id"], {
                        "pending_id": pending_id, "slot": str(put),
                        "target_slot": row["target_slot"], "reason": row["reason"]}))
                    if row["target_slot"] not in (None, str(put)):
                        tx.emit(Event("parcel.placement.mismatch", row["waybill"], "station", {
                            "pending_id": pending_id, "slot": str(put),
                            "target_slot": row["target_slot"], "resolution": "confirmed"}))
                    self._bind(tx, put, row)
        self.lights.refresh(self.lights.devices_of([put] + (
            [SlotAddress.parse(row["target_slot"])] if row["target_slot"] else [])))
        return self._item(session_id, pending_id, courier_id)

    def _release(self, tx: Tx, row: dict[str, Any], reason: str) -> None:
        """An unconfirmed put is not this scan's after all: the scan waits again, with the
        full placement time ahead of it."""
        tx.emit(Event("parcel.placement.released", row["waybill"], "station", {
            "pending_id": row["id"], "slot": row["put_slot"], "reason": reason,
            "deadline": tx.now + self.ctx.config.station.placement_timeout_s}))

    def awaits_confirmation(self, pending_id: str) -> bool:
        return self.ctx.store.query_one(
            "SELECT 1 FROM pending_placements WHERE id = ? AND state = 'unverified'",
            (pending_id,)) is not None

    def on_take_of_unverified(self, slot: SlotAddress) -> bool:
        """A take where a put waits for its courier's confirmation: the parcel went out again
        (the courier moving it, most likely), so there is nothing left to confirm there."""
        row = self.ctx.store.query_one(
            "SELECT * FROM pending_placements WHERE state = 'unverified' AND put_slot = ?"
            " ORDER BY created_at LIMIT 1", (str(slot),))
        if row is None:
            return False
        with self.ctx.store.transaction() as tx:
            self._release(tx, row, "taken_out")
        return True

    def _alarm_light(self, tx: Tx, slot: SlotAddress, reason: str, seconds: float = 10.0) -> None:
        tx.emit(Event("slot.alarm", str(slot), "station",
                      {"slot": str(slot), "until": tx.now + seconds, "reason": reason}))

    def _bind(self, tx: Tx, slot: SlotAddress, pending: dict[str, Any]) -> Placement:
        ctx = self.ctx
        parcel_id = new_id("pcl")
        taken = 0
        while True:
            code = new_code(slot, (), ctx.rng)
            digest = code_digest(code, ctx.secrets.hash_key)
            clash = tx.execute(
                "SELECT 1 FROM parcels WHERE code_digest = ? AND state = 'shelved'", (digest,)
            ).fetchone()
            if not clash:
                break
            taken += 1
            if taken > 1000:
                raise DomainError("no unique code could be drawn")
        deadline = tx.now + ctx.config.station.retention_days * 86400
        tx.emit(Event("parcel.shelved", parcel_id, pending["courier_id"], {
            "parcel_id": parcel_id, "pending_id": pending["id"], "waybill": pending["waybill"],
            "carrier": pending["carrier"], "size": pending["size"], "slot": str(slot),
            "recipient_hash": pending["recipient_hash"], "phone_masked": pending["phone_masked"],
            "code_digest": digest, "courier_id": pending["courier_id"], "deadline": deadline}))
        station = ctx.config.station
        ctx.outbox.enqueue(tx, "sms", parcel_id, {
            "kind": "pickup_code",
            "phone": contacts.phone_of(ctx.sealer, tx, pending["recipient_hash"]),
            "code": str(code),
            "qr": qr_payload(station.id, code, ctx.secrets.hash_key),
            "station_name": station.name,
            "address": station.address,
            "deadline_iso": utc_iso(deadline),
            "waybill_tail": pending["waybill"][-4:],
        })
        return Placement(parcel_id, pending["waybill"], str(slot), str(code), pending["id"],
                         pending["session_id"])

    # --- timeouts ---------------------------------------------------------------------------

    def expire_placements(self, now: float) -> int:
        """Fail the placements whose time is up, measured on the steady clock (ADR 0070): a
        scan waiting for its put, or a put waiting for its courier's confirmation."""
        waiting = self.ctx.store.query(
            "SELECT id, waybill, deadline, put_slot FROM pending_placements"
            f" WHERE state IN {UNSETTLED}")
        rows = self.ctx.due("placement", waiting, "id", "deadline", now,
                            self.ctx.config.station.placement_timeout_s)
        if not rows:
            return 0
        failed = 0
        with self.ctx.lock, self.ctx.store.transaction() as tx:
            for r in rows:
                # decided on a read before the lock: a put that bound it since wins
                if not tx.execute(f"SELECT 1 FROM pending_placements WHERE id = ? AND state IN {UNSETTLED}",
                                  (r["id"],)).fetchone():
                    continue
                tx.emit(Event("parcel.placement.failed", r["waybill"], "station", {
                    "pending_id": r["id"], "reason": "timeout",
                    "message": "no placement was sensed in time; the parcel is not shelved"
                    if not r["put_slot"] else
                    "the courier did not confirm the slot in time; the parcel is not shelved"}))
                if r["put_slot"]:
                    self._unconfirmed_alarm(tx, SlotAddress.parse(r["put_slot"]))
                failed += 1
        return failed

    def _unconfirmed_alarm(self, tx: Tx, slot: SlotAddress) -> None:
        """A parcel lies in `slot` that nobody confirmed: the operator checks it."""
        guard.raise_alarm(tx, "slot.unconfirmed_put", str(slot),
                          f"slot {slot}: a parcel was sensed but its courier never confirmed it")


# a scan as the handheld shows it: where it goes, or where it went once shelved
_ITEM_KEYS = ("id", "waybill", "carrier", "size", "target_slot", "state", "reason", "parcel_id",
              "deadline", "put_slot")
_ITEMS = ("SELECT " + ", ".join(f"p.{k}" for k in _ITEM_KEYS) + ", s.actor, b.slot AS bound_slot"
          " FROM pending_placements p JOIN sessions s ON s.id = p.session_id"
          " LEFT JOIN parcels b ON b.id = p.parcel_id")


def _item_of(row: dict[str, Any]) -> dict[str, Any]:
    item = {k: row[k] for k in _ITEM_KEYS}
    item["slot"] = row["bound_slot"] or row["target_slot"]
    if row["state"] == "unverified":
        # the handheld asks: "is the parcel in <confirm_slot>?" (docs/adr/0095)
        item["confirm_slot"] = row["put_slot"]
        item["message"] = (f"Is this parcel in slot {row['put_slot']}? Confirm on the handheld; "
                           f"no pickup code is sent until you do ({DOUBTS.get(row['reason'], row['reason'])}).")
    return item


def pending_json(row: dict[str, Any]) -> str:
    return json.dumps(row, default=str)
