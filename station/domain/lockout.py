"""Guessing limits for codes, one-time codes and PINs (docs/pickup-codes.md).

Pure: the caller passes the failure times it has on record (from the store, so a restart
forgets nothing). Per scope (a kiosk, a courier id): `free_failures` failures cost nothing,
then each further failure doubles the wait, from `first_delay_s` up to `max_delay_s`.
For the whole station: at most `daily_failure_cap` failures in any 24 hours; after that,
typed entry is refused until the oldest failure is a day old and an operator is alarmed.

Every time here is on one steady timeline (the caller measures ages on the monotonic clock,
station/clocks.py): a failure is never in the future, so no wait exceeds its bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DAY_S = 86400.0


@dataclass(frozen=True)
class LockoutPolicy:
    free_failures: int = 3
    first_delay_s: float = 30.0
    max_delay_s: float = 3600.0
    daily_failure_cap: int = 20


@dataclass(frozen=True)
class LockoutVerdict:
    allowed: bool
    retry_after_s: float = 0.0
    reason: str = ""


def scope_delay(policy: LockoutPolicy, consecutive_failures: int) -> float:
    extra = consecutive_failures - policy.free_failures
    if extra <= 0:
        return 0.0
    return min(policy.first_delay_s * 2 ** (extra - 1), policy.max_delay_s)


def check(
    policy: LockoutPolicy,
    now: float,
    scope_failures: Sequence[float],
    station_failures: Sequence[float],
) -> LockoutVerdict:
    """scope_failures: times of this scope's failures since its last success;
    station_failures: times of every failure at the station (any scope)."""
    last = min((now - t for t in scope_failures), default=None)
    return check_ages(policy, len(scope_failures), last, [now - t for t in station_failures])


def check_ages(
    policy: LockoutPolicy,
    scope_count: int,
    scope_last_age: float | None,
    station_ages: Sequence[float],
) -> LockoutVerdict:
    """The verdict from ages (seconds since each failure): scope_count failures of this
    scope since its last success, the youngest `scope_last_age` old; station_ages: the ages
    of the station's failures (any scope; the youngest `daily_failure_cap` suffice).

    A negative age (a failure "in the future") counts as age 0, so whatever a clock did,
    the scope waits at most `max_delay_s` and the station at most a day."""
    recent = sorted(max(a, 0.0) for a in station_ages if a < DAY_S)
    if len(recent) >= policy.daily_failure_cap:
        wait = DAY_S - recent[policy.daily_failure_cap - 1]
        return LockoutVerdict(False, max(wait, 1.0), "daily_cap")
    if scope_count and scope_last_age is not None:
        wait = scope_delay(policy, scope_count) - max(scope_last_age, 0.0)
        if wait > 0:
            return LockoutVerdict(False, wait, "delay")
    return LockoutVerdict(True)


def max_failures_per_day(policy: LockoutPolicy) -> int:
    return policy.daily_failure_cap
