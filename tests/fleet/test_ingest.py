"""Stations forward over a real Mosquitto into the real fleet (issue 15 items 2 and 7):
acknowledgement after commit, an ingest SIGKILLed mid-burst, broker and database outages."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fleet.ingest import Ingest
from fleet.pg import PostgresProcess
from fleet.store import fleet_alarms, verify_station
from station.store.db import Store
from station.store.eventlog import GENESIS, canonical_json, row_hash
from station.upstream import default_topic

from .conftest import new_database
from .support import IngestProc, append, count_rows, fleet_broker, forwarder, until, verified


def _chain_ok(dsn: str, station: str, last: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert verify_station(conn, station) == (True, last, "")
        assert fleet_alarms(conn, open_only=False) == []
        dupes = conn.execute("SELECT count(*) - count(DISTINCT (station_id, seq)) FROM events").fetchone()[0]
        assert dupes == 0
    assert verified(dsn, station) == last


def test_events_forwarded_by_a_station_land_in_postgres_in_one_chain(
        tmp_path: Path, fleet_dsn: str) -> None:
    with fleet_broker(tmp_path / "broker") as broker:
        ingest = Ingest(fleet_dsn, broker.host, broker.port, client_id="fleet-t1").start()
        assert ingest.subscribed.wait(10)
        store = Store(tmp_path / "st.db").open()
        fwd = forwarder(store, "st-one", broker)
        fwd.start()
        try:
            last = append(store, 300)
            assert fwd.wait_forwarded(last, 30)
            until(lambda: verified(fleet_dsn, "st-one") == last, 30, "fleet holds the chain")
            assert ingest.wait_idle(10)
            assert ingest.stats.acked == ingest.stats.messages >= last
        finally:
            fwd.stop()
            ingest.stop()
            store.close()
    _chain_ok(fleet_dsn, "st-one", last)


def test_ingest_sigkilled_during_a_burst_loses_and_duplicates_nothing(
        tmp_path: Path, fleet_dsn: str) -> None:
    with fleet_broker(tmp_path / "broker") as broker:
        ingest = IngestProc(tmp_path, fleet_dsn, broker).start()
        stores = [Store(tmp_path / f"st{i}.db").open() for i in range(3)]
        fwds = [forwarder(s, f"st-k{i}", broker) for i, s in enumerate(stores)]
        for f in fwds:
            f.start()
        stop = threading.Event()

        def burst(store: Store) -> None:
            while not stop.is_set() and store.last_seq < 1500:
                append(store, 10)

        writers = [threading.Thread(target=burst, args=(s,)) for s in stores]
        try:
            for t in writers:
                t.start()
            until(lambda: count_rows(fleet_dsn) > 400, 60, "the burst reaches the fleet")
            ingest.kill()  # mid-burst: batches in hand, messages unacknowledged
            killed_at = count_rows(fleet_dsn)
            time.sleep(0.5)  # the stations keep publishing into the broker meanwhile
            ingest.start()
            for t in writers:
                t.join()
            lasts = [s.last_seq for s in stores]
            for f, last in zip(fwds, lasts):
                assert f.wait_forwarded(last, 60)
            until(lambda: count_rows(fleet_dsn) == sum(lasts), 90, "every event in the fleet")
        finally:
            stop.set()
            for f in fwds:
                f.stop()
            ingest.stop()
            for s in stores:
                s.close()
    assert killed_at < sum(lasts)
    for i, last in enumerate(lasts):
        _chain_ok(fleet_dsn, f"st-k{i}", last)


def test_a_database_outage_holds_acks_and_the_fleet_catches_up(tmp_path: Path) -> None:
    """PostgreSQL down: the station keeps working and forwarding, the ingest keeps its batch
    and acknowledges nothing; an ingest SIGKILLed while the database is down loses nothing
    either, because nothing it held was acknowledged."""
    with PostgresProcess() as pg, fleet_broker(tmp_path / "broker") as broker:
        dsn = new_database(pg)
        ingest = IngestProc(tmp_path, dsn, broker).start()
        store = Store(tmp_path / "st.db").open()
        fwd = forwarder(store, "st-db", broker)
        fwd.start()
        try:
            first = append(store, 100)
            until(lambda: count_rows(dsn) == first, 30, "first events in the fleet")
            pg.stop("immediate")
            more = append(store, 400)  # the station does not notice
            assert fwd.wait_forwarded(more, 30)  # the broker took them
            time.sleep(1.0)  # the ingest has a batch in hand and cannot commit it
            ingest.kill()
            pg.start()
            ingest.start()
            until(lambda: count_rows(dsn) == more, 60, "the fleet catches up after the outage")
        finally:
            fwd.stop()
            ingest.stop()
            store.close()
        _chain_ok(dsn, "st-db", more)


def test_a_broker_outage_the_stations_work_on_and_catch_up_from_their_cursor(
        tmp_path: Path, fleet_dsn: str) -> None:
    """The fleet broker restarts. Mosquitto 2.0.11 does not restore shared subscriptions
    from its persistence file, so what the stations publish before the ingest re-subscribes
    is acknowledged by the broker and dropped; the station's head shows the fleet what it
    misses and the fleet asks for it again (ADR 0113). Here the ingest comes back last, so
    the resend is the only way those events can arrive."""
    def new_ingest() -> Ingest:
        i = Ingest(fleet_dsn, broker.host, broker.port, client_id="fleet-t4",
                   resend_grace_s=0.5, resend_every_s=1.0).start()
        assert i.subscribed.wait(10)
        return i

    with fleet_broker(tmp_path / "broker") as broker:
        ingest = new_ingest()
        store = Store(tmp_path / "st.db").open()
        fwd = forwarder(store, "st-br", broker)
        fwd.start()
        try:
            first = append(store, 100)
            until(lambda: count_rows(fleet_dsn) == first, 30, "first events")
            ingest.stop()
            broker.stop()
            until(lambda: not fwd.connected, 15, "the forwarder sees the outage")
            during = append(store, 300)  # the station works on alone
            assert fwd.cursor == first
            broker.start()
            assert fwd.wait_forwarded(during, 60)  # the broker took them ... and dropped them
            ingest = new_ingest()
            until(lambda: count_rows(fleet_dsn) == during, 60, "the fleet catches up")
        finally:
            fwd.stop()
            ingest.stop()
            store.close()
    assert fwd.resends >= 1 and ingest.stats.resend_requests >= 1
    _chain_ok(fleet_dsn, "st-br", during)


@pytest.mark.parametrize("ingests", [2])
def test_several_ingests_share_the_load_through_a_shared_subscription(
        tmp_path: Path, fleet_dsn: str, ingests: int) -> None:
    with fleet_broker(tmp_path / "broker") as broker:
        procs = [Ingest(fleet_dsn, broker.host, broker.port, client_id=f"fleet-s{i}").start()
                 for i in range(ingests)]
        for p in procs:
            assert p.subscribed.wait(10)
        stores = [Store(tmp_path / f"st{i}.db").open() for i in range(4)]
        fwds = [forwarder(s, f"st-s{i}", broker) for i, s in enumerate(stores)]
        for f in fwds:
            f.start()
        try:
            lasts = [append(s, 250) for s in stores]
            until(lambda: count_rows(fleet_dsn) == sum(lasts), 60, "every event in the fleet")
        finally:
            for f in fwds:
                f.stop()
            for p in procs:
                p.stop()
            for s in stores:
                s.close()
    assert all(p.stats.inserted > 0 for p in procs), [p.stats.inserted for p in procs]
    for i, last in enumerate(lasts):
        _chain_ok(fleet_dsn, f"st-s{i}", last)


def _signed(station: str, seq: int, prev_hash: str, **over: object) -> bytes:
    """An upstream message whose hash matches its content: anyone who can publish on the
    fleet broker can make one (the station's chain is not keyed)."""
    body: dict = {"station": station, "seq": seq, "ts": "2026-12-01T10:00:00.000000Z",
                  "type": "test.tick", "actor": "station", "subject": "room", "data": {"n": seq},
                  "snapshot": None, "prev_hash": prev_hash, "epoch": 0, "epoch_seq": 1, **over}
    body["hash"] = row_hash(body["seq"], body["ts"], body["type"], body["actor"], body["subject"],
                            canonical_json(body["data"]), body["snapshot"], body["prev_hash"])
    return json.dumps(body).encode()


def test_bad_payloads_on_the_fleet_broker_are_counted_and_the_ingest_goes_on(
        tmp_path: Path, fleet_dsn: str) -> None:
    """Payloads that pass the hash check but that the parser or PostgreSQL cannot take (a NUL
    in a text field, an impossible date, a surrogate, deep nesting, a NUL byte): each is
    counted as rejected and acknowledged, and a station's real events still land behind it.
    Before, any of them killed the ingest's worker thread and every later message waited
    unacknowledged for ever (and came back as the same poison after a restart)."""
    poison = [
        b"\x00",
        _signed("st-px", 1, GENESIS, subject="a\x00b"),
        _signed("st-px", 1, GENESIS, ts="2026-99-99T00:00:00.000000Z"),
        _signed("st-px", 1, GENESIS, data={"waybill": "SF\x001"}),
        b'{"station":"st-px","seq":1,"ts":"2026-12-01T10:00:00.000000Z","type":"x","actor":"a",'
        b'"subject":"s","data":{"a":"\\ud800"},"prev_hash":"' + GENESIS.encode() + b'","hash":"'
        + b"0" * 64 + b'"}',
        b'{"station":"st-px","data":' + b'{"a":' * 5000 + b"1" + b"}" * 5001,
    ]
    with fleet_broker(tmp_path / "broker") as broker:
        ingest = Ingest(fleet_dsn, broker.host, broker.port, client_id="fleet-t6").start()
        assert ingest.subscribed.wait(10)
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-poisoner")
        pub.connect(broker.host, broker.port)
        pub.loop_start()
        store = Store(tmp_path / "st.db").open()
        fwd = forwarder(store, "st-ok", broker)
        try:
            for p in poison:
                pub.publish(default_topic("st-px"), p, qos=1).wait_for_publish(10)
            fwd.start()
            last = append(store, 50)
            assert fwd.wait_forwarded(last, 30)
            until(lambda: verified(fleet_dsn, "st-ok") == last, 30, "the station's events behind the poison")
            assert ingest.wait_idle(10)
            assert ingest.stats.acked == ingest.stats.messages
        finally:
            fwd.stop()
            pub.loop_stop()
            pub.disconnect()
            ingest.stop()
            store.close()
    with psycopg.connect(fleet_dsn, autocommit=True) as conn:
        rejected = conn.execute("SELECT coalesce(sum(count), 0) FROM rejected").fetchone()[0]
        assert conn.execute("SELECT count(*) FROM events WHERE station_id = 'st-px'").fetchone()[0] == 0
    assert rejected == len(poison) == ingest.stats.rejected
    _chain_ok(fleet_dsn, "st-ok", last)
