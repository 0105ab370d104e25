"""Lockout bookkeeping over the store: failures are events, so a restart forgets none."""

from __future__ import annotations

from station.domain.errors import LockedOut
from station.domain.lockout import DAY_S, LockoutVerdict, check
from station.store.db import Tx
from station.store.eventlog import Event

from .context import Ctx, new_id

# Kinds that share one station-wide daily cap: what a customer at the kiosk can guess.
CUSTOMER_KINDS = ("code", "otp")
COURIER_KINDS = ("pin",)


def _group(kind: str) -> tuple[str, ...]:
    return COURIER_KINDS if kind in COURIER_KINDS else CUSTOMER_KINDS


def verdict(ctx: Ctx, kind: str, scope: str, now: float) -> LockoutVerdict:
    group = _group(kind)
    marks = ",".join("?" * len(group))
    scope_rows = ctx.store.query(
        "SELECT at FROM auth_failures WHERE kind = ? AND scope = ? AND cleared = 0", (kind, scope)
    )
    station_rows = ctx.store.query(
        f"SELECT at FROM auth_failures WHERE kind IN ({marks}) AND at > ?", (*group, now - DAY_S)
    )
    return check(
        ctx.lockout_policy, now, [r["at"] for r in scope_rows], [r["at"] for r in station_rows]
    )


def ensure_allowed(ctx: Ctx, kind: str, scope: str, now: float) -> None:
    v = verdict(ctx, kind, scope, now)
    if not v.allowed:
        if v.reason == "daily_cap":
            msg = "Too many wrong attempts at this station today; entry by typed code is paused."
        else:
            msg = f"Too many wrong attempts; try again in {int(v.retry_after_s) + 1} s."
        raise LockedOut(msg, v.retry_after_s)


def record_failure(ctx: Ctx, tx: Tx, kind: str, scope: str, actor: str, data: dict[str, object]) -> None:
    tx.emit(Event(f"auth.{kind}.rejected", scope, actor, {"scope": scope, **data}))
    policy = ctx.lockout_policy
    consecutive = ctx_count(tx, kind, scope)
    group = _group(kind)
    marks = ",".join("?" * len(group))
    daily = tx.execute(
        f"SELECT COUNT(*) FROM auth_failures WHERE kind IN ({marks}) AND at > ?",
        (*group, tx.now - DAY_S),
    ).fetchone()[0]
    if consecutive == policy.free_failures + 1 or daily == policy.daily_failure_cap:
        reason = "daily cap reached" if daily >= policy.daily_failure_cap else "repeated failures"
        raise_alarm(tx, "auth.lockout", scope, f"{kind} lockout at {scope}: {reason}")


def ctx_count(tx: Tx, kind: str, scope: str) -> int:
    return int(
        tx.execute(
            "SELECT COUNT(*) FROM auth_failures WHERE kind = ? AND scope = ? AND cleared = 0",
            (kind, scope),
        ).fetchone()[0]
    )


def record_success(tx: Tx, kind: str, scope: str, actor: str, data: dict[str, object]) -> None:
    tx.emit(Event(f"auth.{kind}.accepted", scope, actor, {"scope": scope, **data}))


def raise_alarm(tx: Tx, kind: str, subject: str, message: str, **data: object) -> str:
    alarm_id = new_id("alm")
    tx.emit(Event("alarm.raised", subject, "station",
                  {"alarm_id": alarm_id, "kind": kind, "message": message, **data}))
    return alarm_id
