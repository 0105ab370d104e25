"""Takes somebody inside must still answer for: what the exit decides from (ADR 0075).

A take the shelves sensed is open until it is explained away: the session it counts
against shows its parcels at the exit, the parcel is sensed back in its slot, or an
operator who looked at the snapshots settles it. A take counts against a session when it
came from a slot lit for that session (`pickup.slot.taken`); a take nobody's lights
explain (`slot.lifted`: a slot lit for nobody, or more parcels than the session had there)
counts against nobody, so against everyone who was inside when it happened."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from station.store.db import Store
from station.store.eventlog import Event

from .context import Ctx
from .errors import FlowError


@dataclass(frozen=True)
class OpenTake:
    seq: int
    slot: str
    session_id: str | None  # None: nobody's lights explain it


def entered_seq(store: Store, session_id: str) -> int | None:
    """The log position where `session_id` was opened: takes after it may be theirs.
    (Store reads on the thread holding a transaction see that transaction.)"""
    row = store.query_one("SELECT MIN(seq) n FROM events WHERE subject = ? AND type = 'pickup.opened'",
                          (session_id,))
    return int(row["n"]) if row and row["n"] is not None else None


def open_since(store: Store, after_seq: int) -> list[OpenTake]:
    """Every take sensed after `after_seq` that nothing has explained yet."""
    return [OpenTake(int(r["seq"]), r["slot"], r["session_id"]) for r in store.query(
        "SELECT seq, slot, session_id FROM takes WHERE resolved_seq IS NULL AND seq > ?"
        " ORDER BY seq", (after_seq,))]


def unresolved(store: Store, limit: int = 500) -> list[dict[str, Any]]:
    """The operator's list: open takes, newest first."""
    return store.query(
        "SELECT t.seq, t.slot, t.session_id, t.at FROM takes t WHERE t.resolved_seq IS NULL"
        " ORDER BY t.seq DESC LIMIT ?", (limit,))


def resolve(ctx: Ctx, take_seq: int, actor: str, note: str = "") -> dict[str, Any]:
    """An operator settles a take (seen on the snapshots: put back unseen, a courier's, a
    parcel handed over): the exit stops waiting for it. Recorded with who and why."""
    with ctx.lock, ctx.store.transaction() as tx:
        row = tx.execute("SELECT slot, session_id, resolved_seq FROM takes WHERE seq = ?",
                         (take_seq,)).fetchone()
        if row is None:
            raise FlowError(f"no take {take_seq}", code="not_found", status=404)
        if row[2] is not None:
            return {"take_seq": take_seq, "resolved": True, "already": True}
        tx.emit(Event("take.resolved", row[0], actor, {
            "take_seq": take_seq, "slot": row[0], "session_id": row[1], "note": note[:200]}))
    return {"take_seq": take_seq, "resolved": True, "already": False}
