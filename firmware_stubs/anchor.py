"""How a device judges a command's age on a clock that cannot step (docs/adr/0090).

A command carries `mono`: the station's monotonic clock at issue and at expiry, and the epoch
that names that clock (it restarts with the station's kernel). A device knows the station's
monotonic clock through an `Anchor`: one station reading taken while the device's own
monotonic clock was known to be at or after `local` (the time.sync answers a challenge the
device issued at `local`, so the station read its clock after that). From there both clocks
run at the same rate, within `drift`:

    station_now  <=  anchor.station + (our_now - anchor.local) * (1 + drift)

The device takes the right-hand side, an upper bound: a command is refused once it *may* have
expired, so it never runs after the station has given it up, whatever either wall clock does.
An imprecise anchor errs towards refusing (`expired`), which the device answers by asking for
a new time.sync and the station by retrying once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

DRIFT = 2e-4  # 200 ppm: a cheap crystal is within 100; the hourly re-sync bounds the rest
ISSUE_SLACK_S = 1.0  # a command issued later than our bound on the station's clock is odd


@dataclass(frozen=True)
class Anchor:
    """The station's monotonic clock `epoch` read `station`, at or after our `local`."""

    epoch: str
    station: float
    local: float
    source: Literal["sync", "host"]
    drift: float = DRIFT

    def station_now(self, local_now: float) -> float:
        """An upper bound on the station's monotonic clock when ours reads `local_now`."""
        return self.station + max(0.0, local_now - self.local) * (1.0 + self.drift)


def host_anchor(epoch: str, local_now: float) -> Anchor:
    """For firmware on the station's own machine (simulation, tests): our monotonic clock is
    the station's, read exactly."""
    return Anchor(epoch, local_now, local_now, "host", drift=0.0)


def judge(anchor: Anchor | None, mono: dict[str, Any], local_now: float) -> tuple[str, str] | None:
    """None if a command stamped `mono` may run now, else (refusal reason, detail)."""
    if anchor is None:
        return "no_trusted_time", "waiting for time.sync"
    if mono["epoch"] != anchor.epoch:
        return "clock_skew", "stamped on another station clock (the station restarted?)"
    station_now = anchor.station_now(local_now)
    if station_now >= mono["expires"]:
        return "expired", f"{station_now - mono['expires']:.3f} s late"
    if mono["issued"] > station_now + ISSUE_SLACK_S:
        return "clock_skew", f"issued {mono['issued'] - station_now:.3f} s ahead of our clock"
    return None
