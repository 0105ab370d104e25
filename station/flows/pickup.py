"""Customer pickup: a door that opens only for a waiting parcel, own-colour lights, takes
sensed on the shelves, and the session's end."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

from station.clocks import Stamp, age
from station.domain.codes import PickupCode, code_digest, parse_qr_payload
from station.domain.colours import PALETTE_HEX, allocate_colour, colour_name
from station.domain.errors import InvalidPickupCode
from station.domain.layout import SlotAddress
from station.domain.phones import mask_phone, normalise_phone, phone_hash
from station.store.db import Tx
from station.store.eventlog import Event

from . import alarms, contacts, guard
from .context import Ctx, new_id
from .errors import AuthFailed, FlowError, Unavailable
from .holdings import held_in
from .lights import LightSync
from .ports import outcome_of

# how long the kiosk holds a customer while every colour is taken before answering room_busy
ROOM_BUSY_WAIT_S = 10.0

# how long after a customer passed the exit a take sensed in one of their slots is still
# taken as theirs (the event may be resent after a shelf's reboot or a broker outage)
LATE_TAKE_GRACE_S = 120.0


@dataclass
class EntryResult:
    session_id: str
    colour: str
    colour_name_en: str
    colour_name_zh: str
    slots: list[str]
    parcels: int
    door: str
    expires_at: float
    lights_acked: bool | None = None
    reused: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    # how long the kiosk held the customer for a colour to free (0: a colour was free); the
    # kiosk can thank them for waiting, and latency figures can leave the queue out
    held_s: float = 0.0


class Pickup:
    def __init__(self, ctx: Ctx, lights: LightSync, room_busy_wait_s: float = ROOM_BUSY_WAIT_S) -> None:
        self.ctx = ctx
        self.lights = lights
        self.room_busy_wait_s = room_busy_wait_s

    # --- ways in ----------------------------------------------------------------------------

    def enter_with_code(self, text: str, kiosk: str = "kiosk") -> EntryResult:
        code = PickupCode.parse(text)  # a typo is not a guess: refused without counting
        return self._enter_code(code, kiosk, "code")

    def enter_with_qr(self, payload: str, kiosk: str = "kiosk") -> EntryResult:
        try:
            code = parse_qr_payload(payload, self.ctx.station_id, self.ctx.secrets.hash_key)
        except InvalidPickupCode as exc:
            with self.ctx.lock, self.ctx.store.transaction() as tx:
                tx.emit(Event("auth.qr.rejected", kiosk, kiosk, {"scope": kiosk, "reason": exc.message}))
            raise
        # the tag is unguessable, so a genuine QR skips the typed-code lockout
        return self._enter_code(code, kiosk, "qr", check_lockout=False)

    def _enter_code(self, code: PickupCode, kiosk: str, method: str, check_lockout: bool = True) -> EntryResult:
        ctx = self.ctx
        digest = code_digest(code, ctx.secrets.hash_key)
        if not check_lockout:
            row = ctx.store.query_one(
                "SELECT recipient_hash FROM parcels WHERE code_digest = ? AND state = 'shelved'", (digest,))
            if row is None:
                raise AuthFailed("No parcel is waiting for this code. Check the code and try again.",
                                 code="wrong_code")
            return self.open_for(row["recipient_hash"], kiosk, method, auth_kind="code")
        # admitted and counted before the code is tested; tested and settled in one transaction
        attempt = guard.admit(ctx, "code", kiosk, kiosk, {"method": method})
        with ctx.lock, ctx.store.transaction() as tx:
            row = tx.execute(
                "SELECT recipient_hash FROM parcels WHERE code_digest = ? AND state = 'shelved'",
                (digest,)).fetchone()
            if row is None:
                guard.reject(ctx, tx, attempt, kiosk, {"method": method})
            else:
                guard.accept(tx, attempt, kiosk, {"method": method})
        if row is None:
            raise AuthFailed("No parcel is waiting for this code. Check the code and try again.",
                             code="wrong_code")
        return self.open_for(row[0], kiosk, method, auth_kind=None)

    def request_otp(self, phone: str, kiosk: str = "kiosk") -> dict[str, Any]:
        """Send a one-time code only to a phone that has a parcel waiting; the answer is the
        same either way so the kiosk cannot be used to learn who has parcels.

        The per-phone count is read and the new code recorded in one transaction under the
        station lock: a burst of requests for one number sends at most the daily limit."""
        ctx = self.ctx
        normalised = normalise_phone(phone)
        recipient = phone_hash(normalised, ctx.secrets.hash_key)
        lk = ctx.config.lockout
        with ctx.lock, ctx.store.transaction() as tx:
            guard.ensure_allowed(ctx, tx, "otp", kiosk)
            now = ctx.stamp()
            waiting = tx.execute(
                "SELECT 1 FROM parcels WHERE recipient_hash = ? AND state = 'shelved' LIMIT 1",
                (recipient,)).fetchone()
            recent = tx.execute(
                "SELECT created_at, boot, mono FROM otps WHERE recipient_hash = ?"
                " ORDER BY rowid DESC LIMIT ?", (recipient, lk.otp_per_phone_per_day)).fetchall()
            sent_today = sum(1 for r in recent if self._otp_age(r, now) < 86400)
            if waiting and sent_today < lk.otp_per_phone_per_day:
                otp = f"{ctx.rng.randrange(10**6):06d}"
                otp_id = new_id("otp")
                tx.execute(
                    "INSERT INTO otps(id, recipient_hash, digest, created_at, expires_at, tries_left,"
                    " state, boot, mono) VALUES (?,?,?,?,?,?, 'live',?,?)",
                    (otp_id, recipient, self._otp_digest(otp_id, otp), now.wall, now.wall + lk.otp_ttl_s,
                     lk.otp_tries, now.boot, now.mono))
                tx.emit(Event("auth.otp.issued", recipient[:16], kiosk, {
                    "otp_id": otp_id, "phone_masked": mask_phone(normalised), "scope": kiosk}))
                ctx.outbox.enqueue(tx, "sms", otp_id, {
                    "kind": "otp", "phone": normalised, "otp": otp, "ttl_s": int(lk.otp_ttl_s)})
            else:
                reason = "no_parcel" if not waiting else "daily_limit"
                tx.emit(Event("auth.otp.not_sent", recipient[:16], kiosk, {
                    "phone_masked": mask_phone(normalised), "reason": reason, "scope": kiosk}))
        return {"sent": True, "phone_masked": mask_phone(normalised), "ttl_s": lk.otp_ttl_s,
                "message": "If a parcel is waiting for this number, a code is on its way."}

    @staticmethod
    def _otp_age(row: Any, now: Stamp) -> float:
        return age(Stamp(float(row[0]), row[1] or "", float(row[2] or 0.0)), now)

    def enter_with_otp(self, phone: str, otp: str, kiosk: str = "kiosk") -> EntryResult:
        """A one-time code is tested and consumed in one transaction, after the guess was
        admitted: `UPDATE ... WHERE state = 'live' AND tries_left > 0` is what accepts it,
        so two requests with the right code cannot both use it, and a wrong guess costs a
        try of every live code of that number."""
        ctx = self.ctx
        normalised = normalise_phone(phone)
        recipient = phone_hash(normalised, ctx.secrets.hash_key)
        masked: dict[str, object] = {"phone_masked": mask_phone(normalised)}
        attempt = guard.admit(ctx, "otp", kiosk, kiosk, masked)
        ttl = ctx.config.lockout.otp_ttl_s
        ok = False
        with ctx.lock, ctx.store.transaction() as tx:
            now = ctx.stamp()
            rows = [r for r in tx.execute(
                "SELECT id, digest, created_at, boot, mono FROM otps WHERE recipient_hash = ?"
                " AND state = 'live' AND tries_left > 0 ORDER BY rowid DESC", (recipient,)).fetchall()
                if self._otp_age(r[2:], now) < ttl]
            for r in rows:
                if isinstance(otp, str) and hmac.compare_digest(r[1], self._otp_digest(r[0], otp.strip())):
                    ok = tx.execute("UPDATE otps SET state = 'used' WHERE id = ? AND state = 'live'"
                                    " AND tries_left > 0", (r[0],)).rowcount == 1
                    break
            if ok:
                guard.accept(tx, attempt, kiosk, masked)
            else:
                for r in rows:
                    tx.execute("UPDATE otps SET tries_left = tries_left - 1, state = CASE WHEN"
                               " tries_left > 1 THEN 'live' ELSE 'spent' END WHERE id = ?"
                               " AND state = 'live'", (r[0],))
                guard.reject(ctx, tx, attempt, kiosk, masked)
        if not ok:
            raise AuthFailed("That one-time code is wrong or has expired.", code="wrong_otp")
        return self.open_for(recipient, kiosk, "otp", auth_kind=None)

    def _otp_digest(self, otp_id: str, otp: str) -> str:
        return hmac.new(self.ctx.secrets.hash_key, f"otp/{otp_id}/{otp}".encode(), hashlib.sha256).hexdigest()

    # --- the session ------------------------------------------------------------------------

    def open_for(self, recipient: str, kiosk: str, method: str, auth_kind: str | None = "code",
                 *, wait: bool = True) -> EntryResult:
        """Open (or reopen) the recipient's session, light their slots, unlock the door.

        While every colour is taken by people inside, the kiosk's answer is held until one
        frees (bounded by `room_busy_wait_s`, then room_busy): the customer waits at the
        door once instead of being sent away to try again and again. Colours free with a
        commit (a session closing, the "off" of its lights acknowledged and logged), so
        this waits for commits, not for a clock."""
        store = self.ctx.store
        start = time.monotonic()
        deadline = start + self.room_busy_wait_s
        held_s = 0.0
        while True:
            try:
                result = self._open_for(recipient, kiosk, method, auth_kind, wait)
                result.held_s = round(held_s, 4)
                return result
            except Unavailable as exc:
                if exc.code != "room_busy" or time.monotonic() >= deadline:
                    raise
            while time.monotonic() < deadline:  # try again once a colour looks free
                seen = store.last_seq
                if not set(PALETTE_HEX) <= set(self.lights.colours_in_use()):
                    break
                store.wait_for_commit(seen, min(deadline - time.monotonic(), 0.5))
            held_s = time.monotonic() - start

    def _open_for(self, recipient: str, kiosk: str, method: str, auth_kind: str | None,
                  wait: bool) -> EntryResult:
        ctx = self.ctx
        door = ctx.config.doors.entry
        now = ctx.clock()
        with ctx.lock:
            parcels = ctx.store.query(
                "SELECT id, slot FROM parcels WHERE recipient_hash = ? AND state = 'shelved'"
                " ORDER BY slot", (recipient,))
            if not parcels:  # a code may have been used up a moment ago
                raise AuthFailed("No parcel is waiting for you here.", code="no_parcel")
            if not ctx.devices.is_online(door):
                with ctx.store.transaction() as tx:
                    tx.emit(Event("entry.refused", door, kiosk, {"reason": "door_offline", "method": method}))
                    # one open alarm, not one per customer turned away (#14.10)
                    alarms.raise_once(tx, "door.offline", door, "entry door offline while a customer waits")
                raise Unavailable("The entry door is out of order. Staff have been alerted.",
                                  code="door_offline")
            existing = ctx.store.query_one(
                "SELECT * FROM sessions WHERE kind = 'pickup' AND state = 'open' AND recipient_hash = ?",
                (recipient,))
            with ctx.store.transaction() as tx:
                if auth_kind is not None:  # None: the guess that got here was settled already
                    guard.record_success(tx, auth_kind, kiosk, kiosk, {"method": method})
                if existing is not None:
                    session_id, colour = existing["id"], existing["colour"]
                    expires_at = now + ctx.config.station.pickup_session_timeout_s
                    tx.emit(Event("pickup.extended", session_id, kiosk,
                                  {"session_id": session_id, "expires_at": expires_at}))
                else:
                    session_id = new_id("pks")
                    in_use = self.lights.colours_in_use()
                    if set(PALETTE_HEX) <= set(in_use):
                        # a customer is told apart only by colour: with none free, wait
                        raise Unavailable("Every colour is in use by people inside; please try "
                                          "again in a minute.", code="room_busy")
                    colour = allocate_colour(in_use)
                    expires_at = now + ctx.config.station.pickup_session_timeout_s
                    slots: dict[str, int] = {}
                    for p in parcels:
                        slots[p["slot"]] = slots.get(p["slot"], 0) + 1
                    tx.emit(Event("pickup.opened", session_id, kiosk, {
                        "session_id": session_id, "recipient_hash": recipient, "colour": colour,
                        "parcels": [p["id"] for p in parcels], "slots": slots,
                        "expires_at": expires_at, "method": method}))
                tx.emit(Event("door.unlock.requested", door, kiosk, {"session_id": session_id}))
            slot_list = sorted({p["slot"] for p in parcels})
        light_handles = self.lights.refresh(self.lights.devices_of(slot_list))
        door_handle = ctx.devices.unlock(door)
        result = EntryResult(session_id, colour, colour_name(colour, "en"), colour_name(colour, "zh"),
                             slot_list, len(parcels), "requested", expires_at, reused=existing is not None)
        if not wait:
            return result
        outcome = outcome_of(door_handle, ctx.command_timeout)
        result.lights_acked = all(outcome_of(h, ctx.command_timeout).status == "acked" for h in light_handles)
        if outcome.status != "acked":
            with ctx.lock, ctx.store.transaction() as tx:
                tx.emit(Event("entry.refused", door, kiosk, {
                    "reason": f"door_{outcome.status}", "detail": outcome.reason, "session_id": session_id}))
                guard.raise_alarm(tx, "door.no_ack", door, f"entry door did not unlock: {outcome.status}")
                if existing is None:
                    self._close(tx, session_id, "door_unavailable")
            self.lights.refresh()
            raise Unavailable("The door did not open. Staff have been alerted.", code="door_failed")
        result.door = "unlocked"
        return result

    def _close(self, tx: Tx, session_id: str, reason: str) -> None:
        # stamped on both clocks: how long ago it closed must not stretch with a clock step
        tx.emit(Event("pickup.closed", session_id, "station", {"session_id": session_id, "reason": reason,
                                                               **self.ctx.stamp().as_data()}))
        row = tx.execute("SELECT recipient_hash FROM sessions WHERE id = ?", (session_id,)).fetchone()
        if row and row[0]:
            contacts.forget_if_done(tx, row[0])

    def session_view(self, session_id: str) -> dict[str, Any]:
        s = self.ctx.store.query_one("SELECT * FROM sessions WHERE id = ? AND kind = 'pickup'", (session_id,))
        if s is None:
            raise FlowError("no such pickup session", code="not_found", status=404)
        slots = self.ctx.store.query(
            "SELECT slot, remaining FROM session_slots WHERE session_id = ? ORDER BY slot", (session_id,))
        return {"session_id": session_id, "state": s["state"], "colour": s["colour"],
                "colour_name_en": colour_name(s["colour"], "en"),
                "colour_name_zh": colour_name(s["colour"], "zh"),
                "expires_at": s["expires_at"], "reason": s["reason"],
                "slots": [dict(r) for r in slots], "parcels": len(json.loads(s["parcels"]))}

    # --- inside -------------------------------------------------------------------------------

    def on_take(self, slot: SlotAddress) -> bool:
        """A parcel left `slot`. Returns True when a live session expected it."""
        ctx = self.ctx
        rows = ctx.store.query(
            "SELECT ss.session_id FROM session_slots ss JOIN sessions s ON s.id = ss.session_id"
            " WHERE ss.slot = ? AND ss.remaining > 0 AND s.state = 'open' ORDER BY s.opened_at",
            (str(slot),))
        late = False
        if not rows:
            rows = self._left_before_the_take(slot)
            late = True
        if not rows:
            return False
        data: dict[str, Any] = {"session_id": rows[0]["session_id"], "slot": str(slot)}
        if late:
            data["late"] = True
        with ctx.store.transaction() as tx:
            tx.emit(Event("pickup.slot.taken", str(slot), "station", data))
        return True

    def on_put_back(self, slot: SlotAddress, count: object) -> bool:
        """A put into `slot` where a customer inside took from their lit slot and no courier
        holds a parcel to place: the parcel is back (changed their mind, or somebody else's lifted and
        returned), so the take no longer holds anyone at the exit and the slot lights again.

        Only a put that brings the slot back to at most what the records hold counts (a new
        parcel would go above them), so a courier's parcel is never taken for a put-back."""
        ctx = self.ctx
        if not isinstance(count, int) or isinstance(count, bool) or count > held_in(ctx.store, slot):
            return False
        if ctx.store.query_one("SELECT 1 FROM pending_placements WHERE state IN ('waiting', 'unverified') LIMIT 1"):
            return False  # a courier holding a parcel to place could have put it here
        take = ctx.store.query_one(
            "SELECT t.seq, t.session_id FROM takes t JOIN sessions s ON s.id = t.session_id"
            " WHERE t.slot = ? AND t.resolved_seq IS NULL AND s.state = 'open'"
            " ORDER BY t.seq DESC LIMIT 1", (str(slot),))
        if take is None:
            return False
        with ctx.store.transaction() as tx:
            tx.emit(Event("pickup.slot.returned", str(slot), "station", {
                "session_id": take["session_id"], "slot": str(slot), "take_seq": take["seq"]}))
        return True

    def _left_before_the_take(self, slot: SlotAddress) -> list[dict[str, Any]]:
        """Sessions that passed the exit carrying a parcel from `slot` before its take was
        sensed (a sensor's debounce, a resent event after a dropped message or a rebooting
        shelf): the take that arrives now is theirs, not a stranger's. A session that left
        a parcel of its own behind in `slot` still expects no take for that one."""
        # the slot's latest closed sessions, then the grace on the steady clock: after a step
        # back, sessions closed long ago must not look recent (their take could be a stranger's)
        rows = self.ctx.store.query(
            "SELECT ss.session_id, s.closed_at, s.closed_boot, s.closed_mono"
            " FROM session_slots ss JOIN sessions s ON s.id = ss.session_id"
            " WHERE ss.slot = ? AND ss.remaining > 0 AND s.state = 'closed'"
            " AND s.reason IN ('completed', 'partial')"
            " AND ss.remaining > (SELECT COUNT(*) FROM parcels p WHERE p.slot = ss.slot"
            "   AND p.recipient_hash = s.recipient_hash AND p.state = 'shelved')"
            " ORDER BY s.closed_at DESC LIMIT 20", (str(slot),))
        now = self.ctx.stamp()
        return [r for r in reversed(rows) if self.ctx.closed_within(r, LATE_TAKE_GRACE_S, now)]

    def expire_sessions(self, now: float) -> int:
        """Close the sessions whose time is up, measured on the steady clock: a wall-clock
        step neither cuts a customer's session short nor keeps it open past its timeout."""
        open_ = self.ctx.store.query(
            "SELECT id, expires_at FROM sessions WHERE kind = 'pickup' AND state = 'open'")
        rows = self.ctx.due("pickup", open_, "id", "expires_at", now,
                            self.ctx.config.station.pickup_session_timeout_s)
        closed = 0
        if rows:
            with self.ctx.lock, self.ctx.store.transaction() as tx:
                for r in rows:
                    # decided on a read before the lock: a session the customer ended at the
                    # exit in the meantime is not closed again as timed out
                    if tx.execute("SELECT 1 FROM sessions WHERE id = ? AND state = 'open'",
                                  (r["id"],)).fetchone():
                        self._close(tx, r["id"], "timeout")
                        closed += 1
        return closed
