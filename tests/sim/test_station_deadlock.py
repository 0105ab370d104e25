"""Found by the simulator: a placement event arriving while an HTTP request holds the
station lock and refreshes the lights deadlocked the whole station.

The MQTT thread delivers the event holding the link's `_deliver_lock` and waits for
`ctx.lock` (core._on_placement); the request thread (shelving.scan, pickup.open_for,
exit.check) holds `ctx.lock` and, via lights.refresh -> link.replace_lights -> link._flush,
waits for `_deliver_lock`. Every later request then hangs on `ctx.lock`."""

from __future__ import annotations

import threading
import time

from tests.support.stack import LiveStation


def test_placement_event_while_a_request_refreshes_lights_does_not_deadlock(tmp_path):
    ls = LiveStation(tmp_path).__enter__()
    core = ls.core
    done = threading.Event()

    def request() -> None:
        with core.ctx.lock:                 # what scan(), open_for() and exit.check() hold
            ls.put("1-1-01")                # a placement event arrives on the MQTT thread
            time.sleep(0.5)                 # ... which now waits for ctx.lock in on_event
            core.lights.refresh(force=True)  # replace_lights -> _flush
        done.set()

    threading.Thread(target=request, daemon=True).start()
    ok = done.wait(10)
    if ok:
        ls.__exit__(None, None, None)
    else:  # the threads stay stuck; stop only what does not need them
        ls.broker.stop()
        ls.webhook.stop()
    assert ok, "station deadlocked: link._flush under ctx.lock vs on_event waiting for ctx.lock"
