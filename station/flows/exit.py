"""The exit check: the waybills under the document camera decide whether the exit opens.

Every waybill must belong to a parcel waiting for one customer who is inside (a live
session, or one that timed out within the grace period while they were still inside).
Anything else — somebody else's parcel, an unknown waybill — keeps the door locked, raises
an alarm and tells the customer what is wrong. A partial pickup is fine.

The door's decision comes from what the shelves sensed, not from what the customer says
(DESIGN §9, ADR 0075): nobody passes while a take that no lights explain and that happened
after they came in is unresolved, and "leave without parcels" opens only for a known
session inside that has no take of its own, or of anybody else since it came in, open.
Each decision is read and recorded in one transaction under the station lock."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from station.store.eventlog import Event

from . import alarms, contacts, guard
from .care import Care
from .context import Ctx
from .errors import FlowError, Unavailable
from .lights import LightSync
from .ports import outcome_of
from .takes import OpenTake, entered_seq, open_since

INSIDE_GRACE_S = 1800.0
# how many of the latest timed-out sessions can still count as inside (far more than fit in a room)
MAX_TIMED_OUT_INSIDE = 200


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
        """recipient hash -> their session inside: the open one, else the latest that timed
        out within the grace period. Two indexed questions (one OR is answered with a scan of
        every session); the grace on the steady clock, so a wall-clock step neither keeps a
        long-gone customer "inside" nor drops one who is."""
        store, stamp = self.ctx.store, self.ctx.stamp(now)
        inside: dict[str, dict[str, Any]] = {}
        for r in store.query(
                "SELECT * FROM sessions WHERE kind = 'pickup' AND reason = 'timeout'"
                " AND state != 'open' ORDER BY closed_at DESC LIMIT ?", (MAX_TIMED_OUT_INSIDE,)):
            if r["recipient_hash"] not in inside and self.ctx.closed_within(r, INSIDE_GRACE_S, stamp):
                inside[r["recipient_hash"]] = r
        for r in store.query("SELECT * FROM sessions WHERE state = 'open' AND kind = 'pickup'"):
            inside[r["recipient_hash"]] = r
        return inside

    def _session_inside(self, session_id: str, now: float) -> dict[str, Any] | None:
        """The pickup session `session_id` if its customer is inside: open, or timed out
        within the grace period, and not yet through the exit."""
        row = self.ctx.store.query_one(
            "SELECT * FROM sessions WHERE id = ? AND kind = 'pickup' AND (state = 'open' OR reason = 'timeout')"
            " AND id NOT IN (SELECT session_id FROM session_exits)", (session_id,))
        if row is None or row["state"] == "open" or self.ctx.closed_within(row, INSIDE_GRACE_S, self.ctx.stamp(now)):
            return row
        return None

    def _open_takes(self, session_id: str) -> list[OpenTake]:
        since = entered_seq(self.ctx.store, session_id)
        return open_since(self.ctx.store, since if since is not None else 0)

    def check(self, waybills: Sequence[str], *, snapshot: str | None = None,
              camera: str = "exit", wait: bool = True) -> ExitResult:
        ctx = self.ctx
        now = ctx.clock()
        shown = list(dict.fromkeys(w.strip() for w in waybills if isinstance(w, str) and w.strip()))
        if not shown:
            raise FlowError("No waybill was read. Hold each parcel's label under the camera.",
                            code="nothing_read", status=422)
        with ctx.lock, ctx.store.transaction() as tx:
            # read on the transaction's connection (Store.query on the thread that holds it)
            inside = self._sessions_inside(now)
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
            if not problems and session is not None:
                # their own waybills are not enough while a parcel nobody's lights explain
                # left a shelf after they came in: it may be in their bag, not shown
                problems += [{"slot": t.slot, "problem": "unexplained_take"}
                             for t in self._open_takes(session["id"]) if t.session_id is None]
            if problems or session is None:
                sid = session["id"] if session else None
                tx.emit(Event("exit.refused", camera, "customer", {
                    "session_id": sid, "problems": problems, "shown": len(shown)}, snapshot))
                unexplained = [x for x in problems if x["problem"] == "unexplained_take"]
                if unexplained:
                    # one open alarm per cause: a burst of refused requests must not bury
                    # the operator (flows/alarms.py)
                    alarms.raise_once(tx, "exit.unexplained_take", sid or camera,
                                      "exit held: parcel lifted unexplained at "
                                      + ", ".join(x["slot"] for x in unexplained),
                                      event_snapshot=snapshot, session_id=sid)
                else:
                    guard.raise_alarm(tx, "exit.wrong_parcel", camera,
                                      "exit refused: " + ", ".join(
                                          f"{x['waybill'][-4:]}:{x['problem']}" for x in problems),
                                      event_snapshot=snapshot, session_id=sid)
                if any(x["problem"] == "not_yours" for x in problems):
                    msg = "This parcel is not yours. Please put it back; staff have been alerted."
                elif unexplained:
                    msg = ("A parcel was lifted from a slot not lit for anyone. The exit opens once "
                           "it is back in its slot; staff have been alerted.")
                else:
                    msg = "A label could not be matched to your parcels. Staff have been alerted."
                return ExitResult(False, sid, problems=problems, message=msg)
            picked = []
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
                    "reason": "completed" if left == 0 else "partial", **ctx.stamp().as_data()}))
            self.care.on_picked_up(tx, session, picked)
            contacts.forget_if_done(tx, session["recipient_hash"])
            tx.emit(Event("exit.passed", camera, "customer", {
                "session_id": session["id"], "picked_up": picked, "left_waiting": left}, snapshot))
        self.lights.refresh()
        return self._open_exit(ExitResult(True, session["id"], picked, message="Thank you."), wait)

    def leave_empty_handed(self, session_id: str | None = None, *,
                           snapshot_of: Callable[[], str | None] | None = None,
                           wait: bool = True) -> ExitResult:
        """Leaving with nothing, with no waybill to check: only a session inside, and only
        when the shelves saw no take since it came in that is still open, neither its own
        (show it) nor anybody's (it may be in this customer's bag).

        `snapshot_of` takes the exit camera's picture for the alarm; it is asked before the
        lock (a camera may take seconds), only when the room's state says the request will
        be refused and no alarm for it is open yet. The decision itself is taken again under
        the lock, in the transaction that records it."""
        ctx = self.ctx
        door = ctx.config.doors.exit
        snapshot = None
        if snapshot_of is not None:
            session, problems = self._leave_problems(session_id, ctx.clock())
            if problems and not alarms.is_open(ctx.store, *self._leave_alarm(session, door)):
                snapshot = snapshot_of()
        with ctx.lock, ctx.store.transaction() as tx:
            session, problems = self._leave_problems(session_id, ctx.clock())
            if problems:
                sid = session["id"] if session else None
                data: dict[str, Any] = {"session_id": sid, "problems": problems}
                if session is None:
                    data["claimed"] = session_id[:64] if isinstance(session_id, str) else None
                tx.emit(Event("exit.refused", door, "customer", data, snapshot))
                kind, subject = self._leave_alarm(session, door)
                if session is None:
                    alarms.raise_once(tx, kind, subject, "leave without parcels asked for no session inside",
                                      event_snapshot=snapshot)
                    msg = ("The exit opens without parcels only for a customer who came in at the "
                           "entry. Please ask staff for help.")
                else:
                    where = sorted({x.get("slot") or x.get("device", "") for x in problems})
                    alarms.raise_once(tx, kind, subject,
                                      "leave without parcels held: open takes or unheard shelves at "
                                      + ", ".join(where), event_snapshot=snapshot, session_id=sid)
                    if any(x["problem"] == "parcel_not_shown" for x in problems):
                        msg = "Please show the parcels you took under the camera."
                    elif all(x["problem"] == "shelf_unheard" for x in problems):
                        msg = ("A shelf is not answering, so the exit cannot tell what was taken. It "
                               "opens once the shelf is back; staff have been alerted.")
                    else:
                        msg = ("A parcel was just lifted that is not yet accounted for. The exit "
                               "opens once it is shown at the exit or back in its slot; staff have "
                               "been alerted.")
                return ExitResult(False, sid, problems=problems, message=msg)
            assert session is not None
            sid = session["id"]
            if session["state"] == "open":
                tx.emit(Event("pickup.closed", sid, "customer",
                              {"session_id": sid, "reason": "left_empty_handed", **ctx.stamp().as_data()}))
            tx.emit(Event("exit.passed", door, "customer", {"session_id": sid, "picked_up": []},
                          snapshot))
        self.lights.refresh()
        return self._open_exit(ExitResult(True, sid, message="Goodbye."), wait)

    def _leave_problems(self, session_id: str | None,
                        now: float) -> tuple[dict[str, Any] | None, list[dict[str, str]]]:
        """Why "leave without parcels" must not open now (empty: it may)."""
        session = self._session_inside(session_id, now) if isinstance(session_id, str) else None
        if session is None:
            return None, [{"problem": "unknown_session"}]
        # a shelf the station cannot hear may be hiding a take: no "nothing taken" from it
        problems = [{"device": device, "problem": "shelf_unheard"} for device in self.ctx.config.shelf_devices
                    if not self.ctx.devices.is_online(device)]
        for t in self._open_takes(session["id"]):
            mine = t.session_id == session["id"]
            problems.append({"slot": t.slot, "problem": "parcel_not_shown" if mine else "unexplained_take"})
        return session, problems

    @staticmethod
    def _leave_alarm(session: dict[str, Any] | None, door: str) -> tuple[str, str]:
        if session is None:
            return "exit.leave_refused", door
        return "exit.unexplained_take", session["id"]

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

