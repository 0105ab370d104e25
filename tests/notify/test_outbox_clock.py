"""The outbox's back-off under wall-clock steps (issue #22.3, ADR 0070).

Before: with the clock an hour fast, one failed send paused the sender "until" an hour
ahead; the step back then held every message, new pickup codes included, for 3,590 s.
Here the wall clock (the store's, and the `now` handed to the dispatcher) steps while the
steady clock runs on; no wait may exceed its back-off, and none may be cut short either.
"""

from __future__ import annotations

import random

from station.notify import Dispatcher, Outbox
from station.store.db import Store

from .conftest import FakeClock
from .fakes import ScriptedSender
from .helpers import pickup

HOUR = 3600.0


def _queue(store: Store, outbox: Outbox, n: int) -> str:
    with store.transaction() as tx:
        return outbox.enqueue(tx, None, f"p{n}", pickup(n))


def test_a_failure_on_a_fast_clock_then_a_step_back_holds_no_message(
        store: Store, outbox: Outbox, clock: FakeClock) -> None:
    steady = 1000.0
    clock.now += HOUR  # the station's clock runs an hour fast
    first = _queue(store, outbox, 1)
    sender = ScriptedSender()
    sender.down = True
    dispatcher = Dispatcher(outbox, [sender], retry_initial_s=1, retry_max_s=300, rng=random.Random(0))
    assert dispatcher.run_once(clock(), steady=steady).failed == 1
    clock.now -= HOUR  # NTP steps it back
    sender.down = False
    code = _queue(store, outbox, 2)  # a new pickup code, queued after the step
    steady += 1.0  # the longest first back-off (retry_initial_s) has passed
    report = dispatcher.run_once(clock(), steady=steady)
    assert sorted(report.sent_ids) == sorted([first, code])
    assert outbox.pending_count() == 0


def test_a_forward_step_does_not_cut_a_back_off_short(
        store: Store, outbox: Outbox, clock: FakeClock) -> None:
    steady = 1000.0
    row = _queue(store, outbox, 1)
    sender = ScriptedSender()
    sender.fail_ids = {row}
    dispatcher = Dispatcher(outbox, [sender], retry_initial_s=10, retry_max_s=300, rng=random.Random(0))
    dispatcher.run_once(clock(), steady=steady)
    clock.now += HOUR
    dispatcher.run_once(clock(), steady=steady + 1.0)
    assert sender.attempts == [row]  # still waiting out its 5-10 s
    dispatcher.run_once(clock(), steady=steady + 10.0)
    assert sender.attempts == [row, row]


def test_a_wait_left_from_before_a_restart_is_never_longer_than_the_longest_back_off(
        store: Store, outbox: Outbox, clock: FakeClock) -> None:
    row = _queue(store, outbox, 1)
    # written by a run whose clock was an hour fast: "retry in an hour"
    store.conn.execute("UPDATE outbox SET next_at = ?, attempts = 1 WHERE id = ?", (clock() + HOUR, row))
    sender = ScriptedSender()
    dispatcher = Dispatcher(outbox, [sender], retry_initial_s=1, retry_max_s=30, rng=random.Random(0))
    assert dispatcher.run_once(clock(), steady=0.0).sent == 0
    assert dispatcher.next_wake(clock(), steady=0.0) == clock() + 30
    assert dispatcher.run_once(clock(), steady=30.0).sent_ids == [row]
