"""Helpers for the fleet's end-to-end tests: the fleet broker, `fleet ingest` as a child
process, a station log forwarding into it, and condition-based waits on the fleet's rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from station.mosquitto import MosquittoProcess
from station.store.db import Store
from station.store.eventlog import Event
from station.upstream import UpstreamForwarder

ROOT = Path(__file__).resolve().parents[2]


def fleet_broker(workdir: Path, extra: list[str] | None = None) -> MosquittoProcess:
    """A fleet broker as production runs one: persistent sessions survive its restarts."""
    workdir.mkdir(parents=True, exist_ok=True)
    conf = ["persistence true", f"persistence_location {workdir}/", "autosave_interval 3600",
            "max_queued_messages 100000", *(extra or [])]
    return MosquittoProcess(workdir=workdir, extra_conf=conf)


def forwarder(store: Store, station_id: str, broker: MosquittoProcess, **kw: Any) -> UpstreamForwarder:
    kw.setdefault("head_every_s", 0.5)
    return UpstreamForwarder(store, station_id, broker.host, broker.port, reconnect_min_s=0.05,
                             reconnect_max_s=0.5, poll_s=0.2, window=100, **kw)


def append(store: Store, count: int, kind: str = "test.tick") -> int:
    for _ in range(count):
        store.append(Event(kind, subject="room", data={"n": store.last_seq + 1}))
    return store.last_seq


def until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def count_rows(dsn: str, station_id: str | None = None) -> int:
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as conn:
            if station_id is None:
                return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
            return int(conn.execute("SELECT count(*) FROM events WHERE station_id = %s",
                                    (station_id,)).fetchone()[0])
    except psycopg.OperationalError:
        return -1


def verified(dsn: str, station_id: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT verified_seq FROM stations WHERE station_id = %s",
                           (station_id,)).fetchone()
    return int(row[0]) if row else 0


class IngestProc:
    """`fleet ingest` as a real child process, to SIGKILL it mid-burst."""

    def __init__(self, tmp: Path, dsn: str, broker: MosquittoProcess, client_id: str = "fleet-ingest-1",
                 extra_broker: str = "") -> None:
        self.config = tmp / f"fleet-{client_id}.toml"
        self.config.write_text(
            f'[database]\ndsn = "{dsn}"\n\n[broker]\nhost = "{broker.host}"\nport = {broker.port}\n'
            f'client_id = "{client_id}"\n{extra_broker}\n[ingest]\nbatch_max = 200\n'
            'resend_grace_s = 0.5\nresend_every_s = 1.0\n')
        self.log_path = tmp / f"ingest-{client_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def start(self, timeout: float = 30.0) -> IngestProc:
        start_at = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "fleet.cli", "ingest", "--config",
                                          str(self.config)], stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=ROOT, env=self.env)

        def subscribed() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"fleet ingest exited {self.proc.returncode}: {self.log()}")
            return "subscribed" in self.log()[start_at:]
        until(subscribed, timeout, "fleet ingest subscribed")
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
