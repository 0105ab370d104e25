"""The exit check: the waybills under the document camera decide whether the exit opens.

Every waybill must belong to a parcel waiting for one customer who is inside (a live
session, or one that timed out within the grace period while they were still inside).
Anything else — somebody else's parcel, an unknown waybill — keeps the door locked, raises
an alarm and tells the customer what is wrong. A partial pickup is fine."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from station.store.eventlog import Event

from . import contacts, guard
from .care import Care
from .context import Ctx
from .errors import FlowError, Unavailable
from .lights import LightSync
from .ports import outcome_of

INSIDE_GRACE_S = 1800.0


@dataclass
class ExitResult:
    allowed: bool
    session_id: str | None
    picked_up: list[str] = field(default_factory=list)
    problems: list[dict[str, str]] = field(default_factory=list)
    door: str = "locked"
    message: str = ""


class ExitCheck:
    def __init__(self, ctx: Ctx, lights: LightSync) -> None:
        self.ctx = ctx
        self.lights = lights
        self.care = Care(ctx)

    def _sessions_inside(self, now: float) -> dict[str, dict[str, Any]]:
        # two indexed questions, not one OR the planner answers with a scan of every session
        rows = self.ctx.store.query(
            "SELECT * FROM sessions WHERE state = 'open' AND kind = 'pickup'"
            " UNION ALL SELECT * FROM sessions WHERE kind = 'pickup' AND reason = 'timeout'"
            " AND closed_at > ? AND state != 'open'", (now - INSIDE_GRACE_S,))
        return {r["recipient_hash"]: r for r in rows}

    def check(self, waybills: Sequence[str], *, snapshot: str | None = None,
              camera: str = "exit", wait: bool = True) -> ExitResult:
        ctx = self.ctx
        now = ctx.clock()
        shown = list(dict.fromkeys(w.strip() for w in waybills if isinstance(w, str) and w.strip()))
        if not shown:
            raise FlowError("No waybill was read. Hold each parcel's label under the camera.",
                            code="nothing_read", status=422)
        inside = self._sessions_inside(now)
        with ctx.lock:
            parcels = {}
            for w in shown:
                parcels[w] = ctx.store.query_one("SELECT * FROM parcels WHERE waybill = ?", (w,))
            owners = {p["recipient_hash"] for p in parcels.values() if p is not None}
            problems: list[dict[str, str]] = []
            session = None
            owner_sessions = [inside[o] for o in owners if o in inside]
            if len(owner_sessions) == 1:
                session = owner_sessions[0]
            for w, p in parcels.items():
                if p is None:
                    problems.append({"waybill": w, "problem": "unknown_waybill"})
                elif p["direction"] != "in":
                    problems.append({"waybill": w, "problem": "outbound_parcel"})
                elif session is None or p["recipient_hash"] != session["recipient_hash"]:
                    problems.append({"waybill": w, "problem": "not_yours"})
                elif p["state"] not in ("shelved", "picked_up"):
                    problems.append({"waybill": w, "problem": f"parcel_{p['state']}"})
            if problems or session is None:
                with ctx.store.transaction() as tx:
                    tx.emit(Event("exit.refused", camera, "customer", {
                        "session_id": session["id"] if session else None,
                        "problems": problems, "shown": len(shown)}, snapshot))
                    guard.raise_alarm(tx, "exit.wrong_parcel", camera,
                                      "exit refused: " + ", ".join(
                                          f"{x['waybill'][-4:]}:{x['problem']}" for x in problems),
                                      session_id=session["id"] if session else None)
                msg = ("This parcel is not yours. Please put it back; staff have been alerted."
                       if any(x["problem"] == "not_yours" for x in problems)
                       else "A label could not be matched to your parcels. Staff have been alerted.")
                return ExitResult(False, session["id"] if session else None, problems=problems, message=msg)
            picked = []
            with ctx.store.transaction() as tx:
                for w, p in parcels.items():
                    if p["state"] == "shelved":
                        tx.emit(Event("parcel.picked_up", p["id"], "customer",
                                      {"parcel_id": p["id"], "session_id": session["id"], "waybill": w}))
                        picked.append(p["id"])
                left = tx.execute(
                    "SELECT COUNT(*) FROM parcels WHERE recipient_hash = ? AND state = 'shelved'",
                    (session["recipient_hash"],)).fetchone()[0]
                if session["state"] == "open":
                    tx.emit(Event("pickup.closed", session["id"], "customer", {
                        "session_id": session["id"],
                        "reason": "completed" if left == 0 else "partial"}))
                self.care.on_picked_up(tx, session, picked)
                contacts.forget_if_done(tx, session["recipient_hash"])
                tx.emit(Event("exit.passed", camera, "customer", {
                    "session_id": session["id"], "picked_up": picked, "left_waiting": left}, snapshot))
        self.lights.refresh()
        return self._open_exit(ExitResult(True, session["id"], picked, message="Thank you."), wait)

    def leave_empty_handed(self, session_id: str | None = None, *, wait: bool = True) -> ExitResult:
        """Leaving with nothing: allowed unless the shelves saw this customer take a parcel."""
        ctx = self.ctx
        with ctx.lock:
            taken = self._taken(session_id) if session_id else 0
            if taken:
                with ctx.store.transaction() as tx:
                    tx.emit(Event("exit.refused", "exit", "customer",
                                  {"session_id": session_id, "problems": [{"problem": "parcel_not_shown"}]}))
                return ExitResult(False, session_id, problems=[{"problem": "parcel_not_shown"}],
                                  message="Please show the parcels you took under the camera.")
            with ctx.store.transaction() as tx:
                if session_id:
                    s = tx.execute("SELECT state FROM sessions WHERE id = ?", (session_id,)).fetchone()
                    if s and s[0] == "open":
                        tx.emit(Event("pickup.closed", session_id, "customer",
                                      {"session_id": session_id, "reason": "left_empty_handed"}))
                tx.emit(Event("exit.passed", "exit", "customer", {"session_id": session_id, "picked_up": []}))
            self.lights.refresh()
        return self._open_exit(ExitResult(True, session_id, message="Goodbye."), wait)

    def _taken(self, session_id: str) -> int:
        """Parcels the shelves saw this session take: what it came for minus what is left
        (from the session's own rows, not a walk through the log)."""
        row = self.ctx.store.query_one("SELECT parcels FROM sessions WHERE id = ?", (session_id,))
        if row is None:
            return 0
        left = self.ctx.store.query_one(
            "SELECT COALESCE(SUM(remaining), 0) n FROM session_slots WHERE session_id = ?", (session_id,))
        # a parcel refused at the kiosk (#19.4) lies in its slot again: not carried out
        refused = self.ctx.store.query_one(
            "SELECT COUNT(*) n FROM refusals WHERE session_id = ? AND state = 'done'", (session_id,))
        return max(len(json.loads(row["parcels"])) - int(left["n"]) - int(refused["n"]), 0)

    def _open_exit(self, result: ExitResult, wait: bool) -> ExitResult:
        ctx = self.ctx
        door = ctx.config.doors.exit
        handle = ctx.devices.unlock(door)
        result.door = "requested"
        if not wait:
            return result
        outcome = outcome_of(handle, ctx.command_timeout)
        if outcome.status != "acked":
            with ctx.lock, ctx.store.transaction() as tx:
                guard.raise_alarm(tx, "door.no_ack", door, f"exit door did not unlock: {outcome.status}")
            raise Unavailable("The exit door did not open. Use the emergency release; staff are alerted.",
                              code="door_failed")
        result.door = "unlocked"
        return result
