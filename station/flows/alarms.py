"""Alarms that a flood cannot multiply: one open alarm per cause.

An alarm stays open until an operator acknowledges it. While one of a kind is open for a
subject, the same cause raises no second one (DESIGN §9: alarms per cause have a budget);
the facts themselves are still events of their own. The check and the record share the
caller's transaction, so two threads cannot both find none open and both raise one."""

from __future__ import annotations

from station.store.db import Tx

from . import guard


def is_open(tx: Tx, kind: str, subject: str) -> bool:
    return tx.execute(
        "SELECT 1 FROM alarms WHERE kind = ? AND subject = ? AND acknowledged_at IS NULL LIMIT 1",
        (kind, subject)).fetchone() is not None


def raise_once(tx: Tx, kind: str, subject: str, message: str, **data: object) -> str | None:
    """Raise an alarm unless one of `kind` is open for `subject`; its id, or None."""
    if is_open(tx, kind, subject):
        return None
    return guard.raise_alarm(tx, kind, subject, message, **data)
