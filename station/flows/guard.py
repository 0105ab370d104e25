"""Lockout bookkeeping over the store: failures are events, so a restart forgets none.

A guess is admitted or refused, and an admitted guess recorded, in one transaction under the
station lock, before its secret is tested (`admit`); its outcome is recorded afterwards
(`reject`, `accept`). While its secret is being tested an admitted guess already counts as
a failure, so however many requests arrive at once, no more guesses are tested than the
policy allows (DESIGN §9, docs/pickup-codes.md). A crash between admission and outcome
leaves the guess counted as a failure, which is the safe side.

Ages are measured on the steady clock (station/clocks.py, ADR 0070): a wall-clock step
neither lengthens a wait beyond its bound nor shortens one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from station.clocks import Stamp, age
from station.domain.errors import LockedOut
from station.domain.lockout import LockoutVerdict, check_ages
from station.store.db import Tx
from station.store.eventlog import Event

from .context import Ctx, new_id

# Kinds that share one station-wide daily cap: what a customer at the kiosk can guess.
CUSTOMER_KINDS = ("code", "otp")
COURIER_KINDS = ("pin",)
# operator passwords and kiosk pairing codes each count on their own (#20.1): a burst of
# wrong passwords must not pause customers' typed codes, nor the other way round
OPERATOR_KINDS = ("password",)
PAIRING_KINDS = ("pair",)


@dataclass(frozen=True)
class Attempt:
    """An admitted guess: its event's seq (what its outcome refers to) and where it stood
    in the counts when it was admitted (the alarm fires for the one that reaches a limit)."""

    kind: str
    scope: str
    seq: int
    consecutive: int  # this scope's failures since its last success, this one included
    daily: int  # the station's failures of this group in the last day, this one included


def _group(kind: str) -> tuple[str, ...]:
    for group in (COURIER_KINDS, OPERATOR_KINDS, PAIRING_KINDS):
        if kind in group:
            return group
    return CUSTOMER_KINDS


def _stamp(row: Any) -> Stamp:
    return Stamp(float(row["at"]), row["boot"] or "", float(row["mono"] or 0.0))


def _rows(tx: Tx, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
    cur = tx.execute(sql, args)
    names = [c[0] for c in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _counts(ctx: Ctx, tx: Tx, kind: str, scope: str, now: Stamp) -> tuple[int, float | None, list[float]]:
    """(scope failures since its last success, age of the youngest, ages of the station's
    youngest `daily_failure_cap` failures of the kind's group)."""
    n, last = tx.execute(
        "SELECT COUNT(*), MAX(seq) FROM auth_failures WHERE kind = ? AND scope = ? AND cleared = 0",
        (kind, scope)).fetchone()
    last_age = None
    if last is not None:
        row = _rows(tx, "SELECT at, boot, mono FROM auth_failures WHERE seq = ?", (last,))[0]
        last_age = age(_stamp(row), now)
    cap = ctx.lockout_policy.daily_failure_cap
    youngest: list[dict[str, Any]] = []
    for k in _group(kind):  # one indexed walk per kind, newest first
        youngest += _rows(tx, "SELECT seq, at, boot, mono FROM auth_failures WHERE kind = ?"
                              " ORDER BY seq DESC LIMIT ?", (k, cap))
    youngest.sort(key=lambda r: r["seq"], reverse=True)
    ages = [age(_stamp(r), now) for r in youngest[:cap]]
    return int(n), last_age, ages


def _refusal(v: LockoutVerdict) -> LockedOut:
    if v.reason == "daily_cap":
        msg = "Too many wrong attempts at this station today; entry by typed code is paused."
    else:
        msg = f"Too many wrong attempts; try again in {int(v.retry_after_s) + 1} s."
    return LockedOut(msg, v.retry_after_s)


def ensure_allowed(ctx: Ctx, tx: Tx, kind: str, scope: str) -> None:
    """Inside the caller's transaction: refuse while `scope` is locked out for `kind`
    (asking for a one-time code at a kiosk that is locked out for guessing them)."""
    n, last_age, ages = _counts(ctx, tx, kind, scope, ctx.stamp())
    v = check_ages(ctx.lockout_policy, n, last_age, ages)
    if not v.allowed:
        raise _refusal(v)


def admit(ctx: Ctx, kind: str, scope: str, actor: str, data: dict[str, object] | None = None) -> Attempt:
    """Decide whether one more guess may be tested and, if so, record it, in one transaction
    under the station lock; raises LockedOut (recording nothing) when the policy says no."""
    with ctx.lock, ctx.store.transaction() as tx:
        now = ctx.stamp()
        n, last_age, ages = _counts(ctx, tx, kind, scope, now)
        v = check_ages(ctx.lockout_policy, n, last_age, ages)
        if not v.allowed:
            raise _refusal(v)
        rec = tx.emit(Event(f"auth.{kind}.attempt", scope, actor,
                            {"scope": scope, **now.as_data(), **(data or {})}))
        daily = 1 + sum(1 for a in ages if a < 86400.0)
    return Attempt(kind, scope, rec.seq, n + 1, daily)


def reject(ctx: Ctx, tx: Tx, attempt: Attempt, actor: str, data: dict[str, object]) -> None:
    """The admitted guess was wrong: it stays counted; the guess that reaches a limit alarms."""
    tx.emit(Event(f"auth.{attempt.kind}.rejected", attempt.scope, actor,
                  {"scope": attempt.scope, "attempt": attempt.seq, **data}))
    policy = ctx.lockout_policy
    if attempt.consecutive == policy.free_failures + 1 or attempt.daily == policy.daily_failure_cap:
        reason = "daily cap reached" if attempt.daily >= policy.daily_failure_cap else "repeated failures"
        raise_alarm(tx, "auth.lockout", attempt.scope, f"{attempt.kind} lockout at {attempt.scope}: {reason}")


def accept(tx: Tx, attempt: Attempt, actor: str, data: dict[str, object]) -> None:
    """The admitted guess was right: it no longer counts, and its scope starts afresh."""
    tx.emit(Event(f"auth.{attempt.kind}.accepted", attempt.scope, actor,
                  {"scope": attempt.scope, "attempt": attempt.seq, **data}))


def record_success(tx: Tx, kind: str, scope: str, actor: str, data: dict[str, object]) -> None:
    """A success that no guess preceded (a genuine QR): clears the scope like one."""
    tx.emit(Event(f"auth.{kind}.accepted", scope, actor, {"scope": scope, **data}))


def raise_alarm(tx: Tx, kind: str, subject: str, message: str, *,
                event_snapshot: str | None = None, **data: object) -> str:
    """`event_snapshot` is the event's own snapshot reference (the picture the operator
    opens with the alarm); anything else goes into its data."""
    alarm_id = new_id("alm")
    tx.emit(Event("alarm.raised", subject, "station",
                  {"alarm_id": alarm_id, "kind": kind, "message": message, **data}, event_snapshot))
    return alarm_id
