"""Device traces (command outcomes, routine door reports) are written in batches off the
link's thread: none is lost on an orderly stop or while the disk refuses them for a while,
and they keep their order in the hash-chained log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from station.flows.device_log import DeviceLogWriter, is_trace
from station.store.db import Store, StoreFull
from station.store.eventlog import Event, verify_chain


def _ns(store: Store, type_: str) -> list[int]:
    return [json.loads(r["data"])["n"] for r in
            store.query("SELECT data FROM events WHERE type = ? ORDER BY seq", (type_,))]


def test_queued_traces_are_all_committed_in_order_and_the_chain_holds(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db").open()
    writer = DeviceLogWriter(store, max_batch=7).start()
    for i in range(50):
        writer.submit(Event("command.acked", "shelf-1", "shelf-1", {"n": i}))
    writer.stop()
    assert _ns(store, "command.acked") == list(range(50))
    assert verify_chain(store.conn).ok


def test_stop_writes_what_is_still_queued(tmp_path: Path) -> None:
    store = Store(tmp_path / "t.db").open()
    writer = DeviceLogWriter(store)
    for i in range(5):                         # not started yet: all of it waits
        writer.submit(Event("command.expired", "door-exit", "door-exit", {"n": i}))
    writer.start().stop()
    assert _ns(store, "command.expired") == list(range(5))


def test_a_batch_the_disk_refuses_is_kept_and_written_when_space_returns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path / "t.db").open()
    real = Store.transaction
    full = {"on": True}

    def refusing(self: Store):  # type: ignore[no-untyped-def]
        if full["on"]:
            raise StoreFull("the station's disk is full")
        return real(self)

    monkeypatch.setattr(Store, "transaction", refusing)
    writer = DeviceLogWriter(store, retry_s=0.05).start()
    for i in range(3):
        writer.submit(Event("door.unlocked", "door-entry", "door-entry", {"n": i}))
    writer.submit(Event("door.locked", "door-entry", "door-entry", {"n": 3}))
    full["on"] = False                         # an operator freed space
    writer.submit(Event("door.unlocked", "door-entry", "door-entry", {"n": 4}))
    writer.stop()
    assert _ns(store, "door.unlocked") == [0, 1, 2, 4]
    assert _ns(store, "door.locked") == [3]


def test_a_disk_that_stays_full_keeps_only_the_newest_reports(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path / "t.db").open()

    def refusing(self: Store):  # type: ignore[no-untyped-def]
        raise StoreFull("the station's disk is full")

    writer = DeviceLogWriter(store, max_held=3, retry_s=0.01)
    monkeypatch.setattr(Store, "transaction", refusing)
    for i in range(10):
        writer.submit(Event("command.acked", "shelf-1", "shelf-1", {"n": i}))
    writer.start().stop()                      # refused to the end: nothing written, no hang
    assert store.query_one("SELECT COUNT(*) n FROM events")["n"] == 0


def test_only_traces_are_batched() -> None:
    assert is_trace("command.acked") and is_trace("device.bad_message")
    assert not is_trace("placement") and not is_trace("door.forced_open")
    assert not is_trace("device.offline")
    assert is_trace("door.unlocked")
    assert not is_trace("door.forced_open") and not is_trace("door.held_open")
    assert not is_trace("door.emergency_release")


def test_a_report_the_store_can_never_take_does_not_hold_back_the_others(tmp_path: Path) -> None:
    """A lone surrogate cannot be written as UTF-8: that one report is dropped, the batch
    around it is written, and the writer keeps going (#14.11)."""
    store = Store(tmp_path / "t.db").open()
    writer = DeviceLogWriter(store)
    writer.submit(Event("command.acked", "shelf-1", "shelf-1", {"n": 0}))
    writer.submit(Event("command.acked", "shelf-1", "shelf-1", {"n": "\ud800"}))
    writer.submit(Event("command.acked", "shelf-1", "shelf-1", {"n": 2}))
    writer.start().stop()
    assert _ns(store, "command.acked") == [0, 2]
    assert verify_chain(store.conn).ok


def test_reports_arriving_apart_within_the_linger_share_one_commit(tmp_path: Path) -> None:
    """The first report waits for the others (ADR 0121) instead of paying a transaction and
    an fsync of its own; a stop ends the wait and writes the batch."""
    import threading

    store = Store(tmp_path / "t.db").open()
    commits: list[int] = []
    store.subscribe(lambda events: commits.append(len(events)))
    writer = DeviceLogWriter(store, linger_s=30.0).start()
    writer.submit(Event("command.acked", "shelf-1", "shelf-1", {"n": 0}))
    threading.Event().wait(0.2)  # without a linger the first report is committed alone by now
    for i in range(1, 5):
        writer.submit(Event("command.acked", "shelf-1", "shelf-1", {"n": i}))
    writer.stop()
    assert commits == [5]
    assert _ns(store, "command.acked") == list(range(5))
