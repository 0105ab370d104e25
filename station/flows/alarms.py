"""Alarms that a flood cannot multiply: one open alarm per cause.

An alarm stays open until an operator acknowledges it. While one of a kind is open for a
subject, the same cause raises no second one (DESIGN §9: alarms per cause have a budget);
the facts themselves are still events of their own. The check and the record share the
caller's transaction, so two threads cannot both find none open and both raise one."""

from __future__ import annotations

from station.store.db import Store, Tx

from . import guard

_OPEN = "SELECT 1 FROM alarms WHERE kind = ? AND subject = ? AND acknowledged_at IS NULL LIMIT 1"


def is_open(db: Tx | Store, kind: str, subject: str) -> bool:
    """In a transaction (what decides), or on the store (a peek before taking the lock,
    e.g. whether a snapshot is worth taking for an alarm: the decision is taken again)."""
    if isinstance(db, Tx):
        return db.execute(_OPEN, (kind, subject)).fetchone() is not None
    return db.query_one(_OPEN, (kind, subject)) is not None


def raise_once(tx: Tx, kind: str, subject: str, message: str, *,
               event_snapshot: str | None = None, **data: object) -> str | None:
    """Raise an alarm unless one of `kind` is open for `subject`; its id, or None.
    (`event_snapshot` as for guard.raise_alarm.)"""
    if is_open(tx, kind, subject):
        return None
    return guard.raise_alarm(tx, kind, subject, message, event_snapshot=event_snapshot, **data)
