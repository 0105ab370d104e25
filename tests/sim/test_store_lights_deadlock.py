"""Found by the simulator (examples/day.toml after 2c33038 + 65d1bc1: every request timed out).

pickup.open_for allocates a colour inside `store.transaction()`, which now holds the store
lock for the whole transaction, and calls LightSync.colours_in_use -> colours_maybe_shown,
which takes the LightSync lock. LightSync.refresh (the ticker, any flow) takes the LightSync
lock first and then queries the store (desired -> claims -> store.query -> store lock).
Lock order store -> lights on one thread, lights -> store on the other: deadlock, and then
every request waits on the store lock."""

from __future__ import annotations

import threading
import time

from tests.support.stack import LiveStation


def test_colour_allocation_in_a_transaction_vs_a_light_refresh(tmp_path):
    ls = LiveStation(tmp_path).__enter__()
    core = ls.core
    done = threading.Event()

    def entry() -> None:  # what pickup.open_for does
        with core.ctx.store.transaction():
            time.sleep(0.3)                      # the refresh below starts meanwhile
            core.lights.colours_in_use()
        done.set()

    a = threading.Thread(target=entry, daemon=True)
    a.start()
    time.sleep(0.1)
    refresh = threading.Thread(target=lambda: core.lights.refresh(force=True), daemon=True)
    refresh.start()
    ok = done.wait(10)
    if ok:
        refresh.join(10)  # before the store closes under it
        ls.__exit__(None, None, None)
    else:  # the threads stay stuck; stop only what does not need them
        ls.broker.stop()
        ls.webhook.stop()
    assert ok, "deadlock: store lock -> LightSync lock (open_for) vs LightSync lock -> store lock (refresh)"
