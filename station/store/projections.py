"""Projection appliers: one function per event type that changes a projection table.

The live path and replay run the same appliers, so a replayed log rebuilds exactly the
tables on disk. Events with no applier (door, light, exit, alarm notices ...) are log-only."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

from .eventlog import EventRecord, parse_utc

Applier = Callable[[sqlite3.Connection, EventRecord, float], None]
APPLIERS: dict[str, Applier] = {}


def applies(*types: str) -> Callable[[Applier], Applier]:
    def register(fn: Applier) -> Applier:
        for t in types:
            APPLIERS[t] = fn
        return fn

    return register


def apply_event(conn: sqlite3.Connection, event: EventRecord, at: float | None = None) -> None:
    """`at` is parse_utc(event.ts) when the caller has it already (the commit path)."""
    applier = APPLIERS.get(event.type)
    if applier is not None:
        applier(conn, event, parse_utc(event.ts) if at is None else at)


# --- couriers ----------------------------------------------------------------------------


def _pin(d: dict[str, Any]) -> str:
    # `pin_hash` keeps the sealed hash as the event carried it (ADR 0082); logs written
    # before sealing carry `pin_hash` in clear, and replay keeps rebuilding them as they are
    return str(d["pin_sealed"] if "pin_sealed" in d else d["pin_hash"])


@applies("courier.added")
def _courier_added(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    d = e.data
    conn.execute(
        "INSERT INTO couriers(id, carrier, name, pin_hash, active, valid_from, valid_until,"
        " has_face, created_at, source) VALUES (?,?,?,?,1,?,?,0,?,?)",
        (d["courier_id"], d["carrier"], d["name"], _pin(d), d.get("valid_from"),
         d.get("valid_until"), at, d.get("source", "local")),
    )


@applies("courier.updated")
def _courier_updated(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    d = e.data
    conn.execute("UPDATE couriers SET carrier = ?, name = ?, valid_from = ?, valid_until = ? WHERE id = ?",
                 (d["carrier"], d["name"], d.get("valid_from"), d.get("valid_until"), d["courier_id"]))


@applies("courier.bundle.applied")
def _bundle_applied(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    d = e.data
    conn.execute("INSERT INTO bundle_state(kind, version, issued_at, applied_at, digest) VALUES ('couriers',?,?,?,?)"
                 " ON CONFLICT(kind) DO UPDATE SET version = excluded.version, issued_at = excluded.issued_at,"
                 " applied_at = excluded.applied_at, digest = excluded.digest",
                 (d["version"], d.get("issued_at"), at, d.get("digest")))


@applies("courier.disabled", "courier.enabled")
def _courier_active(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    active = 1 if e.type == "courier.enabled" else 0
    # who disabled them: a station's own disabling of a fleet courier is a hold that no
    # bundle lifts (ADR 0131)
    conn.execute("UPDATE couriers SET active = ?, disabled_by = ? WHERE id = ?",
                 (active, None if active else e.actor, e.data["courier_id"]))


@applies("courier.pin.changed")
def _courier_pin(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    conn.execute(
        "UPDATE couriers SET pin_hash = ? WHERE id = ?", (_pin(e.data), e.data["courier_id"])
    )


@applies("courier.face.enrolled", "courier.face.removed")
def _courier_face(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    has = 1 if e.type == "courier.face.enrolled" else 0
    conn.execute("UPDATE couriers SET has_face = ? WHERE id = ?", (has, e.data["courier_id"]))


@applies("courier.removed")
def _courier_removed(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    conn.execute("DELETE FROM couriers WHERE id = ?", (e.data["courier_id"],))


# --- shelving ------------------------------------------------------------------------------


@applies("shelving.opened", "return.opened", "dropoff.opened")
def _session_opened(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    d = e.data
    conn.execute(
        "INSERT INTO sessions(id, kind, actor, recipient_hash, colour, mode, state, opened_at,"
        " expires_at, parcels) VALUES (?,?,?,?,?,?,'open',?,?,?)",
        (d["session_id"], e.type.split(".")[0], e.actor, d.get("recipient_hash"), d.get("colour"),
         d.get("mode"), at, d.get("expires_at"), json.dumps(d.get("parcels", []))),
    )


@applies("pickup.opened")
def _pickup_slots(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    _session_opened(conn, e, at)
    for slot, count in sorted(e.data.get("slots", {}).items()):
        conn.execute(
            "INSERT INTO session_slots(session_id, slot, remaining) VALUES (?,?,?)",
            (e.data["session_id"], slot, int(count)),
        )


@applies("pickup.slot.taken")
def _pickup_taken(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    conn.execute(
        "UPDATE session_slots SET remaining = MAX(remaining - 1, 0)"
        " WHERE session_id = ? AND slot = ?",
        (e.data["session_id"], e.data["slot"]),
    )
    # a late take belongs to a session that already showed its parcels at the exit
    late = bool(e.data.get("late"))
    conn.execute(
        "INSERT INTO takes(seq, slot, session_id, at, resolved_seq, how) VALUES (?,?,?,?,?,?)",
        (e.seq, e.data["slot"], e.data["session_id"], at, e.seq if late else None,
         "shown" if late else None),
    )


@applies("pickup.slot.returned")
def _pickup_returned(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    conn.execute(
        "UPDATE session_slots SET remaining = remaining + 1 WHERE session_id = ? AND slot = ?",
        (e.data["session_id"], e.data["slot"]),
    )
    conn.execute(
        "UPDATE takes SET resolved_seq = ?, how = 'put_back' WHERE seq = ? AND resolved_seq IS NULL",
        (e.seq, e.data["take_seq"]),
    )


@applies("take.resolved")
def _take_resolved(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    conn.execute(
        "UPDATE takes SET resolved_seq = ?, how = 'operator' WHERE seq = ? AND resolved_seq IS NULL",
        (e.seq, e.data["take_seq"]),
    )


@applies("exit.passed")
def _exit_passed(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    """A session through the exit: it cannot pass again, and what it took went with it
    (shown under the camera, or, leaving empty-handed, there was nothing)."""
    sid = e.data.get("session_id")
    if not sid:
        return
    conn.execute("INSERT OR IGNORE INTO session_exits(session_id, seq) VALUES (?, ?)", (sid, e.seq))
    # only the takes from slots whose parcels it showed: a take from a slot lit for this
    # session whose parcel it did not show may be a stranger's lift, still open for the exit
    picked = [p for p in e.data.get("picked_up") or [] if isinstance(p, str)]
    conn.execute(
        "UPDATE takes SET resolved_seq = ?, how = 'shown' WHERE session_id = ? AND resolved_seq IS NULL"
        f" AND slot IN (SELECT slot FROM parcels WHERE id IN ({','.join('?' * len(picked))}))",
        (e.seq, sid, *picked),
    )


@applies("slot.sensed")
def _slot_sensed(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    if e.data.get("evt"):
        conn.execute("INSERT OR IGNORE INTO sensed(evt) VALUES (?)", (e.data["evt"],))
    if isinstance(e.data.get("count"), int):
        conn.execute(
            "INSERT INTO slot_counts(slot, count) VALUES (?, ?)"
            " ON CONFLICT(slot) DO UPDATE SET count = excluded.count",
            (e.data["slot"], e.data["count"]))


# the device events logged as themselves (placements are `slot.sensed`, above): each one
# marks its (device, boot id, evt seq) as taken, so it is taken once across restarts
DEVICE_EVENT_TYPES = (
    "door.unlocked", "door.locked", "door.opened", "door.closed", "door.held_open",
    "door.forced_open", "door.emergency_release", "door.emergency_reset",
    "device.command_refused",
)


@applies(*DEVICE_EVENT_TYPES)
def _device_event(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    boot_id, evt_seq = e.data.get("boot_id"), e.data.get("evt_seq")
    if isinstance(boot_id, str) and isinstance(evt_seq, int) and not isinstance(evt_seq, bool):
        conn.execute("INSERT OR IGNORE INTO device_events(device, boot_id, evt_seq) VALUES (?,?,?)",
                     (e.subject, boot_id, evt_seq))


@applies("slot.lifted", "slot.put_back")
def _slot_lifts(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    step = 1 if e.type == "slot.lifted" else -1
    conn.execute(
        "INSERT INTO slot_lifts(slot, n) VALUES (?, MAX(?, 0))"
        " ON CONFLICT(slot) DO UPDATE SET n = MAX(n + ?, 0)", (e.data["slot"], step, step))
    if e.type == "slot.lifted":  # nobody's take: somebody inside must answer for it
        _take_unrecorded(conn, e, at)
    elif not e.data.get("ambiguous"):  # maybe a courier's parcel, not the lifted one
        _take_returned(conn, e, at)


@applies("slot.take.unrecorded")
def _take_unrecorded(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    """A take of nobody's (no session's parcel): it holds the exit until explained."""
    conn.execute("INSERT INTO takes(seq, slot, session_id, at) VALUES (?,?,NULL,?)",
                 (e.seq, e.data["slot"], at))


@applies("slot.take.returned")
def _take_returned(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    """Something came back into the slot: the oldest open take of nobody's there is put back."""
    conn.execute(
        "UPDATE takes SET resolved_seq = ?, how = 'put_back' WHERE seq = (SELECT MIN(seq)"
        " FROM takes WHERE slot = ? AND session_id IS NULL AND resolved_seq IS NULL)",
        (e.seq, e.data["slot"]))


@applies("slot.alarm")
def _slot_alarm(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    conn.execute(
        "INSERT INTO slot_alarms(slot, until, reason) VALUES (?,?,?)"
        " ON CONFLICT(slot) DO UPDATE SET until = excluded.until, reason = excluded.reason",
        (e.data["slot"], e.data["until"], e.data["reason"]),
    )


@applies("slot.alarm.cleared")
def _slot_alarm_cleared(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    conn.execute("DELETE FROM slot_alarms WHERE slot = ?", (e.data["slot"],))


@applies("shelving.closed", "return.closed", "pickup.closed", "dropoff.closed")
def _session_closed(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    conn.execute(
        "UPDATE sessions SET state = 'closed', closed_at = ?, reason = ?, closed_boot = ?, closed_mono = ?"
        " WHERE id = ?",
        (at, e.data.get("reason", ""), e.data.get("boot"), e.data.get("mono"), e.data["session_id"]),
    )


@applies("pickup.extended")
def _session_extended(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    conn.execute(
        "UPDATE sessions SET expires_at = ? WHERE id = ?",
        (e.data["expires_at"], e.data["session_id"]),
    )


@applies("parcel.scanned")
def _parcel_scanned(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    d = e.data
    conn.execute(
        "INSERT INTO pending_placements(id, session_id, waybill, carrier, size, recipient_hash,"
        " phone_masked, target_slot, state, created_at, deadline) VALUES (?,?,?,?,?,?,?,?,"
        "'waiting',?,?)",
        (d["pending_id"], d["session_id"], d["waybill"], d["carrier"], d["size"],
         d["recipient_hash"], d["phone_masked"], d.get("target_slot"), at, d["deadline"]),
    )


@applies("parcel.placement.failed")
def _placement_failed(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    conn.execute(
        "UPDATE pending_placements SET state = 'failed', reason = ? WHERE id = ?",
        (e.data["reason"], e.data["pending_id"]),
    )


@applies("parcel.placement.unverified")
def _placement_unverified(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    conn.execute(
        "UPDATE pending_placements SET state = 'unverified', put_slot = ?, reason = ? WHERE id = ?",
        (e.data["slot"], e.data["reason"], e.data["pending_id"]),
    )


@applies("parcel.placement.released")
def _placement_released(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    conn.execute(
        "UPDATE pending_placements SET state = 'waiting', put_slot = NULL, reason = NULL,"
        " deadline = ? WHERE id = ?",
        (e.data["deadline"], e.data["pending_id"]),
    )


@applies("parcel.placement.retargeted")
def _placement_retargeted(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    conn.execute(
        "UPDATE pending_placements SET target_slot = ? WHERE id = ?",
        (e.data["target_slot"], e.data["pending_id"]),
    )


@applies("parcel.shelved", "parcel.dropped_off")
def _parcel_placed(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    d = e.data
    direction = "out" if e.type == "parcel.dropped_off" else "in"
    state = "dropped_off" if direction == "out" else "shelved"
    conn.execute(
        "INSERT INTO parcels(id, waybill, carrier, direction, state, slot, size, recipient_hash,"
        " phone_masked, code_digest, courier_id, created_at, updated_at, deadline)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (d["parcel_id"], d["waybill"], d["carrier"], direction, state, d["slot"], d["size"],
         d.get("recipient_hash"), d.get("phone_masked"), d.get("code_digest"),
         d.get("courier_id"), at, at, d.get("deadline")),
    )
    if d.get("pending_id"):
        conn.execute(
            "UPDATE pending_placements SET state = 'placed', parcel_id = ? WHERE id = ?",
            (d["parcel_id"], d["pending_id"]),
        )


@applies("parcel.notice.queued")
def _parcel_notice(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    """A plain INSERT: a second decision about the same notice fails its transaction."""
    d = e.data
    conn.execute(
        "INSERT INTO parcel_notices(parcel_id, notice, outbox_id, at) VALUES (?,?,?,?)",
        (d["parcel_id"], d["notice"], d.get("outbox_id"), at),
    )


@applies("parcel.extended")
def _parcel_extended(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    d = e.data
    conn.execute(
        "UPDATE parcels SET deadline = ?, updated_at = ?,"
        " extensions = extensions + ? WHERE id = ?",
        (d["deadline"], at, 1 if d.get("by") == "customer" else 0, d["parcel_id"]),
    )


@applies("parcel.refusal.reported")
def _refusal_reported(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    d = e.data
    conn.execute("INSERT OR IGNORE INTO refusals(parcel_id, session_id, slot, state, at)"
                 " VALUES (?,?,?,'waiting',?)", (d["parcel_id"], d["session_id"], d["slot"], at))


@applies("parcel.refused")
def _parcel_refused(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    """Refused in its slot: out of the customer's session (its light goes off), and the
    carrier's to take back."""
    d = e.data
    conn.execute("UPDATE parcels SET state = 'refused', updated_at = ? WHERE id = ?",
                 (at, d["parcel_id"]))
    conn.execute("UPDATE refusals SET state = 'done' WHERE parcel_id = ?", (d["parcel_id"],))
    if not d.get("put_back"):
        conn.execute("UPDATE session_slots SET remaining = MAX(remaining - 1, 0)"
                     " WHERE session_id = ? AND slot = ?", (d["session_id"], d["slot"]))
    else:  # back in its slot: the session's take of it no longer holds the exit (ADR 0075)
        conn.execute(
            "UPDATE takes SET resolved_seq = ?, how = 'put_back' WHERE seq = (SELECT MAX(seq)"
            " FROM takes WHERE session_id = ? AND slot = ? AND resolved_seq IS NULL)",
            (e.seq, d["session_id"], d["slot"]))


@applies("recipient.reachable.set")
def _reachable_set(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    d = e.data
    conn.execute(
        "INSERT OR REPLACE INTO recipient_flags(recipient_hash, phone_masked, source, carrier,"
        " actor, set_at) VALUES (?,?,?,?,?,?)",
        (d["recipient_hash"], d["phone_masked"], d["source"], d.get("carrier"), e.actor, at))


@applies("recipient.reachable.cleared")
def _reachable_cleared(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    conn.execute("DELETE FROM recipient_flags WHERE recipient_hash = ?", (e.data["recipient_hash"],))


_STATE_OF_EVENT = {
    "parcel.picked_up": "picked_up",
    "parcel.expired": "expired",
    "parcel.recalled": "recalled",
    "parcel.returned": "returned",
    "parcel.missing": "missing",
    "parcel.found": "shelved",
    "parcel.collected": "collected",
}


@applies(*_STATE_OF_EVENT)
def _parcel_state(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    conn.execute(
        "UPDATE parcels SET state = ?, updated_at = ? WHERE id = ?",
        (_STATE_OF_EVENT[e.type], at, e.data["parcel_id"]),
    )


# --- devices, authentication, alarms -------------------------------------------------------


@applies("device.online", "device.offline")
def _device(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    online = 1 if e.type == "device.online" else 0
    conn.execute(
        "INSERT INTO devices(id, online, boot_id, changed_at) VALUES (?,?,?,?)"
        " ON CONFLICT(id) DO UPDATE SET online = excluded.online,"
        " boot_id = COALESCE(excluded.boot_id, devices.boot_id), changed_at = excluded.changed_at",
        (e.data["device"], online, e.data.get("boot_id"), at),
    )


@applies("device.rebooted")
def _device_rebooted(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    # the boot the next start compares a shelf's first state with (station/devices/link.py)
    if isinstance(e.data.get("boot_id"), str):
        conn.execute("UPDATE devices SET boot_id = ? WHERE id = ?", (e.data["boot_id"], e.subject))


def _auth_kind(event_type: str) -> str:
    # auth.code.rejected -> code; auth.pin.rejected -> pin; auth.otp.rejected -> otp
    return event_type.split(".")[1]


@applies("auth.code.attempt", "auth.pin.attempt", "auth.otp.attempt", "auth.password.attempt",
         "auth.pair.attempt")
def _auth_attempt(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    """A guess admitted by the lockout counts as a failure from the moment it is admitted
    (before its secret is tested); its success, if it is one, takes it back."""
    d = e.data
    conn.execute(
        "INSERT INTO auth_failures(seq, at, kind, scope, boot, mono) VALUES (?,?,?,?,?,?)",
        (e.seq, d.get("wall", at), _auth_kind(e.type), d.get("scope", ""), d.get("boot"), d.get("mono")),
    )


@applies("auth.code.rejected", "auth.pin.rejected", "auth.otp.rejected", "auth.qr.rejected",
         "auth.password.rejected", "auth.pair.rejected")
def _auth_rejected(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    if e.data.get("attempt") is not None:
        return  # its attempt already counts
    conn.execute(
        "INSERT INTO auth_failures(seq, at, kind, scope) VALUES (?,?,?,?)",
        (e.seq, at, _auth_kind(e.type), e.data.get("scope", "")),
    )


@applies("auth.code.accepted", "auth.pin.accepted", "auth.otp.accepted", "auth.qr.accepted",
         "auth.password.accepted", "auth.pair.accepted")
def _auth_accepted(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    if e.data.get("attempt") is not None:
        conn.execute("DELETE FROM auth_failures WHERE seq = ?", (e.data["attempt"],))
    conn.execute(
        # only the open ones: the cleared rows of a busy kiosk stay until housekeeping, and
        # touching them all again made every accepted code slower than the one before
        "UPDATE auth_failures SET cleared = 1 WHERE kind = ? AND scope = ? AND cleared = 0",
        (_auth_kind(e.type), e.data.get("scope", "")),
    )


@applies("alarm.raised")
def _alarm_raised(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    d = e.data
    conn.execute(
        "INSERT INTO alarms(id, kind, subject, message, raised_at) VALUES (?,?,?,?,?)",
        (d["alarm_id"], d["kind"], e.subject, d.get("message", ""), at),
    )


@applies("alarm.acknowledged")
def _alarm_ack(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    conn.execute(
        "UPDATE alarms SET acknowledged_at = ?, acknowledged_by = ? WHERE id = ?",
        (at, e.actor, e.data["alarm_id"]),
    )


# --- operator accounts, sessions, kiosk screens (#20.1, ADR 0130) --------------------------


@applies("operator.added")
def _operator_added(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    d = e.data
    conn.execute("INSERT INTO operators(id, role, pw_hash, active, created_at, updated_at) VALUES (?,?,?,1,?,?)",
                 (d["operator_id"], d["role"], d["password_sealed"], at, at))


def _end_sessions(conn: sqlite3.Connection, operator_id: str, at: float, reason: str) -> None:
    conn.execute("UPDATE operator_sessions SET ended_at = ?, end_reason = ? WHERE operator_id = ?"
                 " AND ended_at IS NULL", (at, reason, operator_id))


@applies("operator.disabled", "operator.enabled")
def _operator_active(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    active = e.type == "operator.enabled"
    conn.execute("UPDATE operators SET active = ?, updated_at = ? WHERE id = ?",
                 (int(active), at, e.data["operator_id"]))
    if not active:
        _end_sessions(conn, e.data["operator_id"], at, "operator_disabled")


@applies("operator.password.changed")
def _operator_password(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    conn.execute("UPDATE operators SET pw_hash = ?, updated_at = ? WHERE id = ?",
                 (e.data["password_sealed"], at, e.data["operator_id"]))
    _end_sessions(conn, e.data["operator_id"], at, "password_changed")


@applies("operator.removed")
def _operator_removed(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    conn.execute("DELETE FROM operators WHERE id = ?", (e.data["operator_id"],))
    _end_sessions(conn, e.data["operator_id"], at, "operator_removed")


@applies("operator.login")
def _operator_login(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    d = e.data
    conn.execute("INSERT INTO operator_sessions(key_hash, handle, operator_id, started_at, boot, mono)"
                 " VALUES (?,?,?,?,?,?)",
                 (d["key_hash"], d["session"], d["operator_id"], d.get("wall", at), d.get("boot"), d.get("mono")))


@applies("operator.logout", "operator.session.revoked", "operator.session.expired")
def _operator_session_ended(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    reason = {"operator.logout": "logout", "operator.session.revoked": "revoked"}.get(e.type, "expired")
    conn.execute("UPDATE operator_sessions SET ended_at = ?, end_reason = ? WHERE handle IN"
                 " (SELECT value FROM json_each(?)) AND ended_at IS NULL",
                 (at, reason, json.dumps(e.data["sessions"])))


@applies("kiosk.paired")
def _kiosk_paired(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    conn.execute("INSERT INTO kiosk_devices(id, cred_hash, active, paired_at) VALUES (?,?,1,?)"
                 " ON CONFLICT(id) DO UPDATE SET cred_hash = excluded.cred_hash, active = 1,"
                 " paired_at = excluded.paired_at, revoked_at = NULL",
                 (e.data["device_id"], e.data["cred_hash"], at))


@applies("kiosk.revoked")
def _kiosk_revoked(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    conn.execute("UPDATE kiosk_devices SET active = 0, cred_hash = NULL, revoked_at = ? WHERE id = ?",
                 (at, e.data["device_id"]))


# --- retention (#16, ADR 0101) ------------------------------------------------------------

# parcel states a parcel never leaves: its row can go once it is older than the cut
FINISHED_PARCELS = ("picked_up", "returned", "collected")


@applies("retention.applied")
def _retention_applied(conn: sqlite3.Connection, e: EventRecord, at: float) -> None:
    """Drop the projection rows of what is over and older than the retention's cut: done by
    this applier, at this point of the log, so that replay deletes exactly the same rows.
    Nothing of a parcel still in the room, an open session or an open alarm goes."""
    before = parse_utc(e.data["before"])
    marks = ",".join("?" * len(FINISHED_PARCELS))
    conn.execute(f"DELETE FROM parcels WHERE state IN ({marks}) AND updated_at < ?",
                 (*FINISHED_PARCELS, before))
    conn.execute("DELETE FROM parcel_notices WHERE parcel_id NOT IN (SELECT id FROM parcels)")
    conn.execute("DELETE FROM session_slots WHERE session_id IN (SELECT id FROM sessions"
                 " WHERE state != 'open' AND closed_at < ?)", (before,))
    conn.execute("DELETE FROM sessions WHERE state != 'open' AND closed_at < ?", (before,))
    conn.execute("DELETE FROM pending_placements WHERE state NOT IN ('waiting', 'unverified')"
                 " AND created_at < ?",
                 (before,))
    conn.execute("DELETE FROM alarms WHERE acknowledged_at IS NOT NULL AND raised_at < ?", (before,))
    # cleared guesses count for no lockout any more; uncleared ones are left to the lockout
    conn.execute("DELETE FROM auth_failures WHERE cleared = 1 AND at < ?", (before,))
    conn.execute("DELETE FROM operator_sessions WHERE ended_at IS NOT NULL AND ended_at < ?", (before,))
    # a take some customer answered for, and the exit of a session that is gone, are history:
    # one row each per parcel ever, they were what still grew after retention (#16). An open
    # take stays whatever its age; a session that is gone can pass no exit anyway
    conn.execute("DELETE FROM takes WHERE resolved_seq IS NOT NULL AND at < ?", (before,))
    conn.execute("DELETE FROM session_exits WHERE session_id NOT IN (SELECT id FROM sessions)")


def known_types() -> list[str]:
    return sorted(APPLIERS)


def dump_projections(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every projection table's rows in a stable order: what replay must reproduce."""
    from .schema import PROJECTION_TABLES

    out: dict[str, list[tuple[Any, ...]]] = {}
    for table in PROJECTION_TABLES:
        out[table] = list(conn.execute(f"SELECT * FROM {table} ORDER BY 1"))
    return out
