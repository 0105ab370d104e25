"""Prometheus metrics: what an operator's Grafana shows about one station (issue 17).

Gauges are read from the database and the device link when Prometheus scrapes (a collector,
not counters kept beside the state: the numbers are the projections themselves, so they
cannot drift from them and a restart loses nothing). Latencies are histograms observed where
they happen: a device command from send to its outcome, an entry from the code to the open
door. One registry per station (no global default registry), served on a port of its own,
bound to loopback unless configured otherwise: the figures are operational, not personal,
but they describe the room (who is inside, which door is open) and stay off the LAN."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from station.store.db import Store
from station.store.space import free_bytes

# states in which a parcel occupies a place on a shelf
ON_SHELF = ("shelved", "expired", "recalled", "refused", "dropped_off")
SESSION_KINDS = ("pickup", "shelving", "return", "dropoff")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class _Levels:
    parcels: list[tuple[str, str, int]]
    on_shelf: int
    sessions: dict[str, int]
    outbox: tuple[int, float | None]
    alarms: list[tuple[str, int]]
    cursor: int | None
    last_seq: int


class StationCollector(Collector):
    """Everything that is a level, read at scrape time."""

    def __init__(self, store: Store, capacity: int, device_status: Callable[[], dict[str, Any]],
                 doors: tuple[str, str], disk_paths: dict[str, Path], upstream: bool,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.capacity = capacity
        self.device_status = device_status
        self.doors = doors
        self.disk_paths = disk_paths
        self.upstream = upstream
        self.clock = clock

    def _levels(self) -> _Levels:
        """The counts both the scrape and the dashboard summary show, in one read snapshot."""
        with self.store.reading() as conn:
            return _Levels(
                parcels=conn.execute(
                    "SELECT state, direction, COUNT(*) n FROM parcels GROUP BY state, direction").fetchall(),
                on_shelf=conn.execute(
                    f"SELECT COUNT(*) FROM parcels WHERE state IN ({','.join('?' * len(ON_SHELF))})",
                    ON_SHELF).fetchone()[0],
                sessions=dict(conn.execute(
                    "SELECT kind, COUNT(*) n FROM sessions WHERE state = 'open' GROUP BY kind").fetchall()),
                outbox=tuple(conn.execute(
                    "SELECT COUNT(*) n, MIN(created_at) oldest FROM outbox WHERE state = 'pending'").fetchone()),
                alarms=conn.execute(
                    "SELECT kind, COUNT(*) n FROM alarms WHERE acknowledged_at IS NULL GROUP BY kind").fetchall(),
                cursor=conn.execute("SELECT MIN(seq) FROM upstream_cursor").fetchone()[0],
                last_seq=conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        lv = self._levels()
        parcels, on_shelf, outbox, alarms = lv.parcels, lv.on_shelf, lv.outbox, lv.alarms
        cursor, last_seq = lv.cursor, lv.last_seq

        g = GaugeMetricFamily("ps_parcels", "Parcels at the station by state and direction",
                              labels=["state", "direction"])
        for state, direction, n in parcels:
            g.add_metric([state, direction], n)
        yield g
        yield GaugeMetricFamily("ps_shelf_places", "Places for parcels on all shelves (slots x capacity)",
                                value=self.capacity)
        yield GaugeMetricFamily("ps_shelf_places_free", "Places on the shelves not taken by a parcel",
                                value=max(self.capacity - on_shelf, 0))
        g = GaugeMetricFamily("ps_sessions_open", "Sessions open now (pickup: customers in the room)",
                              labels=["kind"])
        for kind in SESSION_KINDS:
            g.add_metric([kind], lv.sessions.get(kind, 0))
        yield g
        yield GaugeMetricFamily("ps_outbox_pending", "Notifications waiting to be sent", value=outbox[0])
        yield GaugeMetricFamily("ps_outbox_oldest_age_seconds", "Age of the oldest waiting notification",
                                value=0.0 if outbox[1] is None else max(now - outbox[1], 0.0))
        g = GaugeMetricFamily("ps_alarms_open", "Alarms not yet acknowledged by an operator", labels=["kind"])
        for kind, n in alarms:
            g.add_metric([kind], n)
        yield g
        yield GaugeMetricFamily("ps_alarms_open_total", "All alarms not yet acknowledged",
                                value=sum(n for _, n in alarms))
        yield GaugeMetricFamily("ps_event_log_last_seq", "Sequence number of the newest event", value=last_seq)
        if self.upstream:
            yield GaugeMetricFamily("ps_upstream_lag_events", "Events committed but not yet acknowledged "
                                    "by the fleet broker", value=max(last_seq - (cursor or 0), 0))
        yield from self._devices()
        yield from self._disk()

    def summary(self) -> dict[str, Any]:
        """The few levels a dashboard shows at a glance (the Home Assistant bridge's state)."""
        lv = self._levels()
        waiting = sum(n for state, _, n in lv.parcels if state == "shelved")
        on_shelf, inside = lv.on_shelf, lv.sessions.get("pickup", 0)
        alarms = sum(n for _, n in lv.alarms)
        status = self.device_status()
        doors = {}
        for door in self.doors:
            reported = (status.get(door) or {}).get("reported") or {}
            doors[door] = {"locked": bool(reported.get("locked", True)), "open": bool(reported.get("open", False))}
        return {"parcels_waiting": waiting, "places_free": max(self.capacity - on_shelf, 0),
                "customers_inside": inside, "alarms_open": alarms, "doors": doors,
                "devices": {d: bool(st.get("online")) for d, st in status.items()}}

    def _devices(self) -> Iterator[Metric]:
        status = self.device_status()
        online = GaugeMetricFamily("ps_device_online", "1 when the device says it is online", labels=["device"])
        for device, st in sorted(status.items()):
            online.add_metric([device], 1.0 if st.get("online") else 0.0)
        yield online
        locked = GaugeMetricFamily("ps_door_locked", "1 when the door reports its lock closed "
                                   "(absent while it has reported nothing)", labels=["door"])
        opened = GaugeMetricFamily("ps_door_open", "1 when the door contact reports the door open",
                                   labels=["door"])
        for door in self.doors:
            reported = (status.get(door) or {}).get("reported") or {}
            if "locked" in reported:
                locked.add_metric([door], 1.0 if reported["locked"] else 0.0)
            if "open" in reported:
                opened.add_metric([door], 1.0 if reported["open"] else 0.0)
        yield locked
        yield opened

    def _disk(self) -> Iterator[Metric]:
        size = GaugeMetricFamily("ps_database_bytes", "The database with its write-ahead log, on disk",
                                 value=sum(p.stat().st_size for p in self._db_files()))
        yield size
        free = GaugeMetricFamily("ps_disk_free_bytes", "Free space on the disk of each station directory",
                                 labels=["what"])
        for what, path in self.disk_paths.items():
            probe = path if path.exists() else path.parent
            try:
                free.add_metric([what], free_bytes(probe))
            except OSError:
                continue
        yield free

    def _db_files(self) -> list[Path]:
        db = Path(self.store.path)
        return [p for p in (db, db.with_name(db.name + "-wal")) if p.exists()]


class LatencyMetrics:
    """The two histograms and the bookkeeping to observe a command's round trip from its
    outcome event (which names the command, not when it was sent)."""

    MAX_PENDING = 10_000  # send times kept for commands still waiting: a bound, not a leak

    def __init__(self, registry: CollectorRegistry) -> None:
        self.command_seconds = Histogram(
            "ps_command_round_trip_seconds", "A signed device command from send to its outcome",
            ["op", "outcome"], buckets=LATENCY_BUCKETS, registry=registry)
        self.entry_seconds = Histogram(
            "ps_entry_seconds", "A customer's code to the entry door unlocked and their slots lit "
            "(the wait for a free colour left out)", ["method"], buckets=LATENCY_BUCKETS, registry=registry)
        self._sent: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def command_sent(self, cmd_id: str) -> None:
        with self._lock:
            self._sent[cmd_id] = time.monotonic()
            while len(self._sent) > self.MAX_PENDING:
                self._sent.popitem(last=False)

    def command_outcome(self, cmd_id: str, op: str, outcome: str) -> None:
        with self._lock:
            sent = self._sent.pop(cmd_id, None)
        if sent is not None:
            self.command_seconds.labels(op, outcome).observe(time.monotonic() - sent)

    def entry(self, method: str, seconds: float) -> None:
        self.entry_seconds.labels(method).observe(max(seconds, 0.0))


class StationMetrics:
    def __init__(self, collector: StationCollector) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self.latency = LatencyMetrics(self.registry)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def serve(self, host: str, port: int) -> int:
        """Start the scrape endpoint (its own thread); returns the port it listens on."""
        self._server, self._thread = start_http_server(port, host, registry=self.registry)
        return int(self._server.server_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
