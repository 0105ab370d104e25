"""The device's judgement of a command's age on the station's monotonic clock (ADR 0090),
without a broker."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_stubs.anchor import DRIFT, Anchor, host_anchor, judge


def stamp(issued: float, expires: float, epoch: str = "boot-1") -> dict:
    return {"epoch": epoch, "issued": issued, "expires": expires}


@settings(max_examples=500, deadline=None)
@given(
    station_at_challenge=st.floats(0, 1e7),
    answer_delay=st.floats(0, 30),       # the station saw the challenge this long after it
    since_sync=st.floats(0, 3600),       # our uptime since the anchor
    drift=st.floats(-DRIFT, DRIFT),      # station ticks per tick of ours, minus 1
    ttl=st.floats(0.1, 600),
    issued_ago=st.floats(0, 700),
)
def test_a_command_the_station_has_given_up_is_always_refused(
        station_at_challenge, answer_delay, since_sync, drift, ttl, issued_ago):
    # the station read its clock `answer_delay` after our challenge (taken at local 100.0)
    anchor = Anchor("boot-1", station_at_challenge + answer_delay, 100.0, "sync")
    local_now = 100.0 + since_sync
    # how far the station's clock really is now, running at its own rate
    station_now = station_at_challenge + since_sync * (1.0 + drift)
    issued = station_now - issued_ago
    verdict = judge(anchor, stamp(issued, issued + ttl), local_now)
    if station_now >= issued + ttl + 1e-6:  # given up by the station (beyond float rounding)
        assert verdict is not None and verdict[0] == "expired"


def test_a_fresh_command_runs_and_a_late_one_is_refused():
    anchor = Anchor("boot-1", 1000.0, 50.0, "sync")
    assert judge(anchor, stamp(1009.0, 1019.0), 60.0) is None
    reason, detail = judge(anchor, stamp(990.0, 1000.0), 60.0)
    assert reason == "expired" and "late" in detail


def test_another_epoch_or_an_issue_ahead_of_our_bound_is_clock_skew():
    anchor = Anchor("boot-1", 1000.0, 50.0, "sync")
    assert judge(anchor, stamp(1009.0, 1019.0, epoch="boot-2"), 60.0)[0] == "clock_skew"
    assert judge(anchor, stamp(1020.0, 1030.0), 60.0)[0] == "clock_skew"


def test_without_an_anchor_nothing_runs():
    assert judge(None, stamp(0.0, 10.0), 5.0)[0] == "no_trusted_time"


def test_the_host_anchor_is_the_host_clock_exactly():
    anchor = host_anchor("boot-1", 500.0)
    assert anchor.station_now(86_900.0) == 86_900.0
