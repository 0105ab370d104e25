from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from station.notify import Dispatcher, Outbox, PayloadError
from station.notify.outbox import backoff_delay
from station.store.db import Store
from station.store.eventlog import Event, verify_chain

from .conftest import FakeClock
from .fakes import ScriptedSender
from .helpers import PHONE, pickup


def _db_bytes(path: Path) -> bytes:
    """Everything SQLite keeps on disk for this database: main file, WAL, shared memory."""
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_notification_commits_with_its_fact(store: Store, outbox: Outbox) -> None:
    with store.transaction() as tx:
        tx.emit(Event("test.parcel.shelved", subject="p1"))
        row_id = outbox.enqueue(tx, "webhook", "p1", pickup(1))
    row = outbox.get(row_id)
    assert row is not None and row.state == "pending" and row.subject == "p1"
    types = [r["type"] for r in store.query("SELECT type FROM events ORDER BY seq")]
    assert types == ["test.parcel.shelved", "notify.queued"]


def test_rolled_back_fact_leaves_no_notification(store: Store, outbox: Outbox) -> None:
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.emit(Event("test.parcel.shelved", subject="p1"))
        outbox.enqueue(tx, "webhook", "p1", pickup(1))
        raise RuntimeError("the slot sensor disagreed")
    assert store.query("SELECT id FROM outbox") == []
    assert store.query("SELECT seq FROM events") == []


def test_invalid_message_refuses_the_whole_transaction(store: Store, outbox: Outbox) -> None:
    with pytest.raises(ValueError), store.transaction() as tx:
        tx.emit(Event("test.parcel.shelved", subject="p1"))
        outbox.enqueue(tx, None, "p1", {"kind": "pickup_code", "phone": PHONE})
    assert store.query("SELECT seq FROM events") == []


def test_phone_and_code_never_on_disk_in_clear(
    store: Store, outbox: Outbox, db_path: Path, clock: FakeClock
) -> None:
    with store.transaction() as tx:
        for n in range(5):
            outbox.enqueue(tx, "webhook", f"p{n}", pickup(n))
    secrets = [PHONE.encode()] + [f"{48210000 + n:08d}".encode() for n in range(5)]
    data = _db_bytes(db_path)
    assert len(data) > 0
    assert [s for s in secrets if s in data] == []
    # the masked form is what the log holds
    assert b"138****5678" in data
    sender = ScriptedSender()
    Dispatcher(outbox, [sender], rng=random.Random(0)).run_once(clock())
    assert len(sender.delivered) == 5
    store.close()  # checkpoint the WAL into the main file too
    data = _db_bytes(db_path)
    assert [s for s in secrets if s in data] == []


def test_events_carry_id_subject_channel_and_masked_phone_only(
    store: Store, outbox: Outbox, clock: FakeClock
) -> None:
    with store.transaction() as tx:
        row_id = outbox.enqueue(tx, "webhook", "parcel-9", pickup(9))
    sender = ScriptedSender()
    sender.down = True
    dispatcher = Dispatcher(outbox, [sender], retry_initial_s=1, retry_max_s=4,
                            rng=random.Random(0))
    dispatcher.run_once(clock())
    sender.down = False
    dispatcher.run_once(clock.advance(10))
    events = store.query("SELECT type, subject, data FROM events ORDER BY seq")
    assert [e["type"] for e in events] == ["notify.queued", "notify.failed", "notify.sent"]
    for e in events:
        data = json.loads(e["data"])
        assert e["subject"] == "parcel-9"
        assert data["outbox_id"] == row_id and data["phone_masked"] == "138****5678"
        assert PHONE not in e["data"] and "48210009" not in e["data"]
    failed = json.loads(events[1]["data"])
    assert failed["attempt"] == 1 and failed["error"] == "webhook: HTTP 503"
    assert json.loads(events[2]["data"])["attempt"] == 2
    assert verify_chain(store.conn).ok


def test_payload_is_bound_to_its_row(store: Store, outbox: Outbox, key: bytes) -> None:
    with store.transaction() as tx:
        a = outbox.enqueue(tx, None, "pa", pickup(1))
        b = outbox.enqueue(tx, None, "pb", pickup(2))
    assert outbox.open_payload(a).code == "1-2-03-48210001"
    with store.transaction() as tx:  # someone copies b's sealed payload onto a
        tx.execute("UPDATE outbox SET payload = (SELECT payload FROM outbox WHERE id = ?)"
                   " WHERE id = ?", (b, a))
    with pytest.raises(PayloadError):
        outbox.open_payload(a)
    with pytest.raises(PayloadError):
        Outbox(store, bytes(32)).open_payload(b)  # a wrong key opens nothing


def test_unopenable_row_is_retried_not_sent_and_does_not_block_others(
    store: Store, outbox: Outbox, clock: FakeClock
) -> None:
    with store.transaction() as tx:
        bad = outbox.enqueue(tx, None, "pa", pickup(1))
        good = outbox.enqueue(tx, None, "pb", pickup(2))
        tx.execute("UPDATE outbox SET payload = X'0102' WHERE id = ?", (bad,))
    sender = ScriptedSender()
    report = Dispatcher(outbox, [sender], rng=random.Random(0)).run_once(clock())
    assert [i for i, _ in sender.delivered] == [good]
    assert report.failed == 1
    row = outbox.get(bad)
    assert row is not None and row.state == "pending" and row.last_error == "payload: cannot open"


def test_rows_of_one_subject_go_in_creation_order(
    store: Store, outbox: Outbox, clock: FakeClock
) -> None:
    with store.transaction() as tx:
        first = outbox.enqueue(tx, None, "p1", pickup(1))
        second = outbox.enqueue(tx, None, "p1", pickup(2))
        other = outbox.enqueue(tx, None, "p2", pickup(3))
    sender = ScriptedSender()
    sender.fail_ids = {first}
    dispatcher = Dispatcher(outbox, [sender], retry_initial_s=1, retry_max_s=1,
                            rng=random.Random(0))
    dispatcher.run_once(clock())
    # p1's first message failed: its second must wait behind it; p2 is not held up
    assert [i for i, _ in sender.delivered] == [other]
    sender.fail_ids = set()
    for _ in range(5):
        dispatcher.run_once(clock.advance(2))
    assert [i for i, _ in sender.delivered] == [other, first, second]


def test_sender_down_is_probed_once_per_interval_not_once_per_row(
    store: Store, outbox: Outbox, clock: FakeClock
) -> None:
    with store.transaction() as tx:
        for n in range(20):
            outbox.enqueue(tx, None, f"p{n}", pickup(n))
    sender = ScriptedSender()
    sender.down = True
    dispatcher = Dispatcher(outbox, [sender], retry_initial_s=1, retry_max_s=60,
                            rng=random.Random(0))
    assert dispatcher.run_once(clock()).attempted == 1
    assert dispatcher.run_once(clock()).attempted == 0  # paused, nothing hammered
    failed = store.query("SELECT COUNT(*) AS n FROM events WHERE type = 'notify.failed'")
    assert failed[0]["n"] == 1


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    rng = random.Random(42)
    for attempt, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (50, 10.0)]:
        for _ in range(50):
            delay = backoff_delay(attempt, 1.0, 10.0, rng)
            assert base / 2 <= delay <= base
    delays = {round(backoff_delay(3, 1.0, 10.0, rng), 6) for _ in range(20)}
    assert len(delays) > 10  # jittered, not all the same


def test_channel_hint_picks_sender_by_name_or_kind_else_first(outbox: Outbox) -> None:
    console, web, web2 = ScriptedSender("console"), ScriptedSender("webhook"), \
        ScriptedSender("webhook-2")
    d = Dispatcher(outbox, [console, web, web2])
    assert d.resolve("webhook") is web
    assert d.resolve("webhook-2") is web2
    assert d.resolve("sms") is console and d.resolve("default") is console
