"""Customer care (#19, ADR 0150): reminders before a parcel's deadline, the notice when it
expires and goes back (to the recipient and to the carrier), and the pickup confirmation.

Every message is decided in the transaction that records it: the `parcel.notice.queued`
event, its `parcel_notices` row (primary key parcel + notice) and the outbox row commit
together or not at all. A crash before the commit leaves nothing and the next tick decides
again; a crash after it leaves a pending outbox row the dispatcher sends (at least once, the
gateway de-duplicates on the row id) and a key no later decision can insert again.

Deadlines are wall-clock times people read (days away, shown in the message), so reminders
are due on the wall clock like the expiry itself; nothing here measures a duration."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from station.domain.codes import PickupCode, code_digest
from station.domain.parcels import transition
from station.store.db import Tx
from station.store.eventlog import Event, utc_iso

from . import contacts, guard
from .context import Ctx
from .errors import AuthFailed, FlowError

# the outbox channel hint for messages to people (the first configured sender, as pickup codes)
SMS = "sms"


def after_key(offset_s: float) -> str:
    return f"after:{int(offset_s)}"


def before_key(offset_s: float, deadline: float) -> str:
    """A reminder before the deadline is keyed by the deadline too: an extension re-arms it."""
    return f"before:{int(offset_s)}@{int(deadline)}"


def _record(tx: Tx, parcel_id: str, notice: str, outbox_id: str | None,
            **data: Any) -> None:
    tx.emit(Event("parcel.notice.queued", parcel_id, "station",
                  {"parcel_id": parcel_id, "notice": notice, "outbox_id": outbox_id, **data}))


def _sent_before(tx: Tx, parcel_id: str, notice: str) -> bool:
    return tx.execute("SELECT 1 FROM parcel_notices WHERE parcel_id = ? AND notice = ?",
                      (parcel_id, notice)).fetchone() is not None


class Care:
    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx

    # --- reminders ----------------------------------------------------------------------------

    def _due(self, now: float) -> list[tuple[dict[str, Any], str, float]]:
        """(parcel, notice key, when it was due) for every reminder due at `now` and not sent.

        A reminder whose moment came before the parcel was shelved (an offset longer than the
        retention) is never due: the pickup code itself has just told them the deadline."""
        care = self.ctx.config.care
        due: list[tuple[dict[str, Any], str, float]] = []
        cols = "p.id, p.recipient_hash, p.waybill, p.deadline, p.created_at"
        for off in care.remind_after_s:
            key = after_key(off)
            for r in self.ctx.store.query(
                    f"SELECT {cols} FROM parcels p WHERE p.state = 'shelved' AND p.deadline > ?"
                    " AND p.created_at + ? <= ? AND p.created_at + ? < p.deadline"
                    " AND NOT EXISTS (SELECT 1 FROM parcel_notices n WHERE n.parcel_id = p.id"
                    " AND n.notice = ?)", (now, off, now, off, key)):
                due.append((r, key, r["created_at"] + off))
        for off in care.remind_before_s:
            prefix = f"before:{int(off)}@"
            for r in self.ctx.store.query(
                    f"SELECT {cols} FROM parcels p WHERE p.state = 'shelved' AND p.deadline > ?"
                    " AND p.deadline - ? <= ? AND p.deadline - ? > p.created_at"
                    " AND NOT EXISTS (SELECT 1 FROM parcel_notices n WHERE n.parcel_id = p.id"
                    " AND n.notice = ? || CAST(CAST(p.deadline AS INTEGER) AS TEXT))",
                    (now, off, now, off, prefix)):
                due.append((r, before_key(off, r["deadline"]), r["deadline"] - off))
        return due

    def send_reminders(self, now: float) -> int:
        """Queue every reminder due at `now`; returns how many were queued."""
        due = self._due(now)
        if not due:
            return 0
        ctx = self.ctx
        station = ctx.config.station
        sent = 0
        with ctx.lock, ctx.store.transaction() as tx:
            for r, key, _when in due:
                # decided on a read before the lock: a parcel picked up (or extended, or
                # reminded by another tick) since is left alone
                row = tx.execute("SELECT state, deadline FROM parcels WHERE id = ?",
                                 (r["id"],)).fetchone()
                if row is None or row[0] != "shelved" or row[1] != r["deadline"]:
                    continue
                if _sent_before(tx, r["id"], key):
                    continue
                phone = contacts.phone_of(ctx.sealer, tx, r["recipient_hash"])
                if phone is None:
                    continue
                outbox_id = ctx.outbox.enqueue(tx, SMS, r["id"], {
                    "kind": "reminder", "phone": phone, "station_name": station.name,
                    "address": station.address, "deadline_iso": utc_iso(r["deadline"]),
                    "waybill_tail": r["waybill"][-4:]})
                _record(tx, r["id"], key, outbox_id, deadline=r["deadline"])
                sent += 1
        return sent

    # --- expiry -------------------------------------------------------------------------------

    def on_expired(self, tx: Tx, parcel_id: str) -> None:
        """In the transaction that expires the parcel: tell the recipient and the carrier."""
        ctx = self.ctx
        care = ctx.config.care
        station = ctx.config.station
        row = tx.execute("SELECT recipient_hash, waybill, carrier FROM parcels WHERE id = ?",
                         (parcel_id,)).fetchone()
        if row is None:
            return
        recipient, waybill, carrier = row
        self.withdraw_reminders(tx, parcel_id, "expired")
        if care.expiry_notice and not _sent_before(tx, parcel_id, "expired"):
            phone = contacts.phone_of(ctx.sealer, tx, recipient) if recipient else None
            if phone is not None:
                oid = ctx.outbox.enqueue(tx, SMS, parcel_id, {
                    "kind": "expired", "phone": phone, "station_name": station.name,
                    "address": station.address, "waybill_tail": waybill[-4:]})
                _record(tx, parcel_id, "expired", oid)
        if care.carrier_expiry_notice and not _sent_before(tx, parcel_id, "carrier_return"):
            cfg = next((c for c in ctx.config.carriers if c.name == carrier), None)
            if cfg is not None:
                oid = ctx.outbox.enqueue(tx, cfg.notify_sender or "default", f"carrier:{carrier}", {
                    "kind": "carrier_return", "carrier": carrier, "waybill": waybill,
                    "station_name": station.name, "address": station.address,
                    "at_iso": utc_iso(tx.now)})
                _record(tx, parcel_id, "carrier_return", oid)

    # --- pickup -------------------------------------------------------------------------------

    def withdraw_reminders(self, tx: Tx, parcel_id: str, reason: str) -> int:
        """Reminders of `parcel_id` still waiting in the outbox are withdrawn (state
        `withdrawn`, payload wiped) in the caller's transaction: a parcel that left, or went
        back, is never reminded of. A row the dispatcher is sending at this very moment may
        still arrive (delivery is at least once; it cannot be called back from a gateway)."""
        ids = [r[0] for r in tx.execute(
            "SELECT outbox_id FROM parcel_notices WHERE parcel_id = ? AND outbox_id IS NOT NULL"
            " AND (notice LIKE 'after:%' OR notice LIKE 'before:%')", (parcel_id,))]
        withdrawn = 0
        for oid in ids:
            cur = tx.execute("UPDATE outbox SET state = 'withdrawn', payload = X''"
                             " WHERE id = ? AND state = 'pending'", (oid,))
            if cur.rowcount == 1:
                tx.emit(Event("notify.withdrawn", parcel_id, "station",
                              {"outbox_id": oid, "reason": reason}))
                withdrawn += 1
        return withdrawn

    def on_picked_up(self, tx: Tx, session: dict[str, Any], picked: Sequence[str]) -> None:
        """In the exit's transaction: reminders withdrawn, and one confirmation to the
        recipient counting the parcels of carriers that want it sent."""
        if not picked:
            return
        ctx = self.ctx
        for pid in picked:
            self.withdraw_reminders(tx, pid, "picked_up")
        wanted = {c.name for c in ctx.config.carriers if c.pickup_confirmation}
        marks = ",".join("?" * len(picked))
        carriers = [r[0] for r in tx.execute(
            f"SELECT carrier FROM parcels WHERE id IN ({marks})", tuple(picked))]
        count = sum(1 for c in carriers if c in wanted)
        if count == 0:
            return
        phone = contacts.phone_of(ctx.sealer, tx, session["recipient_hash"])
        if phone is None:
            return
        oid = ctx.outbox.enqueue(tx, SMS, session["id"], {
            "kind": "picked_up", "phone": phone, "station_name": ctx.config.station.name,
            "count": count, "at_iso": utc_iso(tx.now)})
        tx.emit(Event("pickup.confirmation.queued", session["id"], "station",
                      {"session_id": session["id"], "outbox_id": oid, "count": count,
                       "parcels": list(picked)}))


class Extensions:
    """A deadline moved on (#19.3): once by the customer at the kiosk, by the configured
    period and only while the station is not short of space; by an operator, any shelved
    parcel, any period. Reminders before the deadline are keyed by it, so they move with it;
    those already waiting in the outbox (which name the old deadline) are withdrawn."""

    def __init__(self, ctx: Ctx, care: Care) -> None:
        self.ctx = ctx
        self.care = care

    def free_ratio(self) -> float:
        inbound = [s.address for s in self.ctx.layout if not s.outbound]
        if not inbound:
            return 0.0
        taken = {r["slot"] for r in self.ctx.store.query(
            "SELECT DISTINCT slot FROM parcels WHERE state IN ('shelved','expired','recalled')")}
        taken |= {r["slot"] for r in self.ctx.store.query(
            "SELECT DISTINCT target_slot AS slot FROM pending_placements WHERE state = 'waiting'")}
        free = sum(1 for a in inbound if str(a) not in taken)
        return free / len(inbound)

    def by_customer(self, code: PickupCode, kiosk: str, *, checked: bool = False) -> dict[str, Any]:
        """`checked`: the code came from a QR whose tag was verified (no guess to count)."""
        ctx = self.ctx
        care = ctx.config.care
        if care.extension_s <= 0:
            raise FlowError("Extending is not offered at this station.", code="extension_off",
                            status=409)
        digest = code_digest(code, ctx.secrets.hash_key)
        attempt = None if checked else guard.admit(ctx, "code", kiosk, kiosk, {"method": "extend"})
        with ctx.lock, ctx.store.transaction() as tx:
            row = tx.execute("SELECT id, deadline, extensions, waybill FROM parcels"
                             " WHERE code_digest = ? AND state = 'shelved'", (digest,)).fetchone()
            if attempt is not None:
                if row is None:
                    guard.reject(ctx, tx, attempt, kiosk, {"method": "extend"})
                else:
                    guard.accept(tx, attempt, kiosk, {"method": "extend"})
        if row is None:
            raise AuthFailed("No parcel is waiting for this code. Check the code and try again.",
                             code="wrong_code")
        parcel_id, _, extensions, waybill = row
        if extensions >= 1:
            raise FlowError("This parcel's deadline was extended once already.",
                            code="already_extended", status=409)
        if self.free_ratio() < care.extension_min_free_ratio:
            raise FlowError("The station is short of space: the deadline cannot be extended today.",
                            code="short_of_space", status=409)
        return self._extend(parcel_id, care.extension_s, "customer", kiosk, once=True)

    def by_operator(self, parcel_id: str, seconds: float, actor: str) -> dict[str, Any]:
        if not 0 < seconds <= 30 * 86400:
            raise FlowError("An extension is between 1 second and 30 days.", code="bad_extension",
                            status=422)
        return self._extend(parcel_id, seconds, "operator", actor, once=False)

    def _extend(self, parcel_id: str, seconds: float, by: str, actor: str, *,
                once: bool) -> dict[str, Any]:
        ctx = self.ctx
        with ctx.lock, ctx.store.transaction() as tx:
            row = tx.execute("SELECT state, deadline, extensions, waybill FROM parcels WHERE id = ?",
                             (parcel_id,)).fetchone()
            if row is None:
                raise FlowError(f"no parcel {parcel_id}", code="not_found", status=404)
            state, old, extensions, waybill = row
            if state != "shelved":
                raise FlowError(f"parcel {parcel_id} is {state}: only a waiting parcel is extended",
                                code="not_shelved", status=409)
            if once and extensions >= 1:  # checked again under the lock: two kiosks at once
                raise FlowError("This parcel's deadline was extended once already.",
                                code="already_extended", status=409)
            deadline = float(old) + seconds
            tx.emit(Event("parcel.extended", parcel_id, actor, {
                "parcel_id": parcel_id, "by": by, "old_deadline": old, "deadline": deadline,
                "extension_s": seconds}))
            self.care.withdraw_reminders(tx, parcel_id, "extended")
        return {"parcel_id": parcel_id, "deadline": deadline, "deadline_iso": utc_iso(deadline),
                "waybill_tail": waybill[-4:], "by": by}


PROBLEMS = {
    "slot_empty": "the lit slot is empty",
    "not_mine": "this is not my parcel",
    "damaged": "damaged, refused by the customer",
}


class Reports:
    """What a customer inside reports at the kiosk (#19.4): each an operator alarm naming the
    slot, the session and the snapshot; "damaged" also refuses the parcel. A refused parcel
    still in its slot is `refused` at once; one in the customer's hands is when the shelf
    senses it put back there. It then joins the carrier's return run, and the customer
    leaves with the rest."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx

    def report(self, session_id: str, slot: str, problem: str, *, kiosk: str = "kiosk",
               snapshot: str | None = None, waybill: str | None = None) -> dict[str, Any]:
        """`waybill`: the refused parcel's label, read at the kiosk. Without it, with two or
        more of the customer's parcels in the slot, the station cannot know which one is
        damaged: it does not guess (a guess refuses one and lets the damaged one out as a
        pickup), it asks for the label (`which_parcel`), before anything is written."""
        ctx = self.ctx
        if problem not in PROBLEMS:
            raise FlowError(f"unknown problem {problem!r}", code="bad_problem", status=422)
        out: dict[str, Any] = {"session_id": session_id, "slot": slot, "problem": problem,
                               "parcel_id": None, "refused": False, "put_back_awaited": False}
        with ctx.lock, ctx.store.transaction() as tx:
            s = tx.execute("SELECT recipient_hash FROM sessions WHERE id = ? AND kind = 'pickup'"
                           " AND state = 'open'", (session_id,)).fetchone()
            if s is None:
                raise FlowError("This session is not open.", code="no_session", status=404)
            ss = tx.execute("SELECT remaining FROM session_slots WHERE session_id = ? AND slot = ?",
                            (session_id, slot)).fetchone()
            if ss is None:
                raise FlowError("That slot is not one of yours.", code="not_your_slot", status=422)
            mine = [r[0] for r in tx.execute(
                "SELECT id FROM parcels WHERE slot = ? AND recipient_hash = ? AND state = 'shelved'"
                " ORDER BY waybill != ?, id", (slot, s[0], waybill or ""))]
            if waybill is not None and problem == "damaged" and not tx.execute(
                    "SELECT 1 FROM parcels WHERE slot = ? AND recipient_hash = ? AND state = 'shelved'"
                    " AND waybill = ?", (slot, s[0], waybill)).fetchone():
                raise FlowError("That parcel is not one of yours waiting in that slot.",
                                code="not_your_parcel", status=422)
            if waybill is None and problem == "damaged" and len(mine) > 1:
                raise FlowError("Two of your parcels are in that slot: show the damaged one's label "
                                "under the camera, or ask staff.", code="which_parcel", status=409)
            tx.emit(Event("pickup.reported", session_id, kiosk,
                          {"session_id": session_id, "slot": slot, "problem": problem}, snapshot))
            out["alarm_id"] = guard.raise_alarm(
                tx, f"kiosk.{problem}", slot, f"slot {slot}: {PROBLEMS[problem]} (session {session_id})",
                slot=slot, session_id=session_id, snapshot=snapshot)
            if problem != "damaged":
                return out
            if not mine:
                return out
            parcel_id = mine[0]
            out["parcel_id"] = parcel_id
            transition(parcel_id, "shelved", "refuse")
            data = {"parcel_id": parcel_id, "session_id": session_id, "slot": slot}
            if ss[0] >= len(mine):  # none of theirs taken from this slot: it lies there
                tx.emit(Event("parcel.refused", parcel_id, kiosk, data, snapshot))
                out["refused"] = True
            else:
                tx.emit(Event("parcel.refusal.reported", parcel_id, kiosk, data, snapshot))
                out["put_back_awaited"] = True
        return out

    def on_put(self, slot: str) -> bool:
        """A put where a refused parcel is awaited: it is back, and refused."""
        ctx = self.ctx
        with ctx.store.transaction() as tx:
            row = tx.execute("SELECT r.parcel_id, r.session_id FROM refusals r JOIN parcels p"
                             " ON p.id = r.parcel_id WHERE r.slot = ? AND r.state = 'waiting'"
                             " AND p.state = 'shelved' ORDER BY r.at LIMIT 1", (slot,)).fetchone()
            if row is None:
                return False
            transition(row[0], "shelved", "refuse")
            tx.emit(Event("parcel.refused", row[0], "customer", {
                "parcel_id": row[0], "session_id": row[1], "slot": slot, "put_back": True}))
        return True
