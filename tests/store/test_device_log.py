"""Device traces (command outcomes) are written in batches off the link's thread: none is
lost on an orderly stop, and they keep their order in the hash-chained log."""

from __future__ import annotations

from pathlib import Path

from station.flows.device_log import DeviceLogWriter, is_trace
from station.store.db import Store
from station.store.eventlog import Event, verify_chain


def test_queued_traces_are_all_committed_in_order_and_the_chain_holds(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db").open()
    writer = DeviceLogWriter(store, max_batch=7).start()
    for i in range(50):
        writer.submit(Event("command.acked", "shelf-1", "shelf-1", {"n": i}))
    assert writer.flush(5)
    writer.stop()
    rows = store.query("SELECT data FROM events WHERE type = 'command.acked' ORDER BY seq")
    assert [int(r["data"].split(":")[1].rstrip("}")) for r in rows] == list(range(50))
    assert verify_chain(store.conn).ok


def test_stop_writes_what_is_still_queued(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db").open()
    writer = DeviceLogWriter(store)
    for i in range(5):                         # not started yet: all of it waits
        writer.submit(Event("command.expired", "door-exit", "door-exit", {"n": i}))
    writer.start().stop()
    assert store.query_one("SELECT COUNT(*) n FROM events WHERE type = 'command.expired'")["n"] == 5


def test_only_traces_are_batched() -> None:
    assert is_trace("command.acked") and is_trace("device.bad_message")
    assert not is_trace("placement") and not is_trace("door.forced_open")
    assert not is_trace("device.offline")
    assert is_trace("door.unlocked")
    assert not is_trace("door.forced_open") and not is_trace("door.held_open")
    assert not is_trace("door.emergency_release")
