"""The operator's long reads (verify, replay, export) never hold up a commit (#22.7).

They used to run on the writer's connection under the station's lock: a one-event commit
waited behind the whole walk (0.97 s behind verify on 100,000 events, a minute on the
week's two million), and so did every door, light and placement. Each test here stops the
read in the middle of its statement (a SQLite progress handler that waits), so the reader
provably holds its read transaction, then commits N events from another thread and counts
them: all N complete while the read is still inside, and the read, released, answers for
the state it started from (a snapshot), not a mix."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from station import cli
from station.api import operator
from station.api.auth import Principal
from station.api.services import Services
from station.config import Secrets
from station.store.db import Store
from station.store.eventlog import Event
from tests.flows.harness import make_station

EVENTS = 3000
COMMITS = 25
OPERATOR = Principal("operator", "op-1")


class Gate:
    """Pauses the first statement run on a connection it is installed on, mid-read."""

    def __init__(self) -> None:
        self.inside = threading.Event()
        self.release = threading.Event()
        self._armed = True

    def install(self, conn: sqlite3.Connection) -> None:
        def handler() -> int:
            if self._armed:
                self._armed = False
                self.inside.set()
                self.release.wait(120)
            return 0

        conn.set_progress_handler(handler, 500)


def gate_operator_reads(monkeypatch: pytest.MonkeyPatch, gate: Gate) -> None:
    """Install the gate on whatever connection the store hands out for reading (the locked
    writer connection of old, the snapshot connection now)."""
    for name in ("reading", "snapshot"):
        original = getattr(Store, name, None)
        if original is None:
            continue

        def gated(self: Store, _original: Any = original) -> Iterator[sqlite3.Connection]:
            with _original(self) as conn:
                gate.install(conn)
                try:
                    yield conn
                finally:
                    conn.set_progress_handler(None, 0)

        monkeypatch.setattr(Store, name, contextmanager(gated))


def fill(store: Store, n: int) -> None:
    for start in range(0, n, 500):
        with store.transaction() as tx:
            for i in range(start, min(n, start + 500)):
                tx.emit(Event("note.test", f"s-{i}", "tester", {"i": i, "pad": "x" * 40}))


def commits_while_read_is_inside(store: Store, gate: Gate, read: Callable[[], Any]) -> tuple[Any, int, list[int]]:
    result: dict[str, Any] = {}

    def run_read() -> None:
        try:
            result["value"] = read()
        except BaseException as exc:  # surfaced by the assertion below
            result["error"] = exc

    reader = threading.Thread(target=run_read, name="operator-read")
    reader.start()
    assert gate.inside.wait(60), f"the read never started: {result}"
    seq_at_read = store.last_seq
    committed: list[int] = []

    def write() -> None:
        for i in range(COMMITS):
            committed.extend(r.seq for r in store.append(Event("door.unlocked", "door-entry", "station", {"n": i})))

    writer = threading.Thread(target=write, name="writer")
    writer.start()
    writer.join(60)
    done_while_inside = len(committed)
    still_inside = reader.is_alive() and not gate.release.is_set()
    gate.release.set()
    writer.join(60)
    reader.join(120)
    assert "error" not in result, result.get("error")
    assert still_inside, "the read finished before the commits were counted"
    assert done_while_inside == COMMITS, (
        f"only {done_while_inside} of {COMMITS} commits completed while the read was inside its "
        "transaction: the read blocks writes")
    return result["value"], seq_at_read, committed


@pytest.fixture
def station(tmp_path: Path, secrets: Secrets) -> Any:
    st = make_station(tmp_path, secrets)
    fill(st.store, EVENTS)
    yield st
    st.store.close()


@pytest.mark.parametrize("what", ["verify", "export", "replay", "events"])
def test_operator_api_reads_never_block_a_commit(station: Any, monkeypatch: pytest.MonkeyPatch, what: str) -> None:
    svc = Services(core=station.core)
    gate = Gate()
    gate_operator_reads(monkeypatch, gate)
    reads: dict[str, Callable[[], Any]] = {
        "verify": lambda: operator.verify(who=OPERATOR, svc=svc),
        "export": lambda: operator.export(format="jsonl", since=None, until=None, type=None,
                                          who=OPERATOR, svc=svc),
        "replay": lambda: operator.replay(seq=EVENTS, at=None, who=OPERATOR, svc=svc),
        "events": lambda: operator.events(since=None, until=None, type=None, subject=None, actor=None,
                                          phone=None, after_seq=0, limit=5000, who=OPERATOR, svc=svc),
    }
    value, seq_at_read, committed = commits_while_read_is_inside(station.store, gate, reads[what])
    assert committed == list(range(seq_at_read + 1, seq_at_read + COMMITS + 1))
    # the read answers for the state it started from
    if what == "verify":
        assert value["ok"] and value["checked"] == seq_at_read
    elif what == "export":
        lines = value.body.decode().splitlines()
        assert len(lines) == seq_at_read and json.loads(lines[-1])["seq"] == seq_at_read
    elif what == "replay":
        assert value["event"]["seq"] == EVENTS
    else:
        assert len(value["events"]) == seq_at_read


@pytest.mark.parametrize("what", ["verify", "export", "replay"])
def test_cli_log_reads_never_block_a_commit(station: Any, monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path, what: str) -> None:
    """`station log verify|export|replay` beside a running station: its own connection,
    one read transaction per walk."""
    gate = Gate()
    original = cli._open_db

    def gated_open(args: Any) -> sqlite3.Connection:
        conn = original(args)
        gate.install(conn)
        return conn

    monkeypatch.setattr(cli, "_open_db", gated_open)
    db = str(station.store.path)
    argv = {"verify": ["log", "verify", "--db", db],
            "export": ["log", "export", "--db", db, "--out", str(tmp_path / "out.jsonl")],
            "replay": ["log", "replay", "--db", db, "--out", str(tmp_path / "replay.db")]}[what]
    code, seq_at_read, _ = commits_while_read_is_inside(station.store, gate, lambda: cli.main(argv))
    assert code == 0
    if what == "export":
        lines = (tmp_path / "out.jsonl").read_text().splitlines()
        assert len(lines) == seq_at_read
    if what == "replay":
        with sqlite3.connect(tmp_path / "replay.db") as out:
            assert out.execute("SELECT MAX(seq) FROM events").fetchone()[0] == seq_at_read


def test_the_wal_shrinks_back_after_a_held_snapshot(tmp_path: Path) -> None:
    """#22.9: a read held while 20 MB are written lets the WAL grow (it cannot be reset past
    the reader); once the reader is gone and writes go on, the file is back under the limit
    instead of staying at its high-water mark for ever."""
    from station.store.db import WAL_LIMIT_BYTES

    store = Store(tmp_path / "s.db").open()
    wal = Path(f"{store.path}-wal")
    try:
        with store.snapshot() as conn:
            assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0
            for start in range(0, 4000, 200):
                with store.transaction() as tx:
                    for i in range(start, start + 200):
                        tx.emit(Event("note.test", f"s-{i}", "tester", {"pad": "y" * 4000}))
            grown = wal.stat().st_size
            assert grown > 2 * WAL_LIMIT_BYTES
        for i in range(50):  # the station goes on: the next checkpoint resets, the limit truncates
            store.append(Event("note.test", "after", "tester", {"i": i}))
        assert wal.stat().st_size <= WAL_LIMIT_BYTES, (grown, wal.stat().st_size)
        # and it stays bounded as the station keeps writing
        for _ in range(30):
            with store.transaction() as tx:
                for _i in range(100):
                    tx.emit(Event("note.test", "more", "tester", {"pad": "z" * 2000}))
            assert wal.stat().st_size <= WAL_LIMIT_BYTES + 1024 * 1024
    finally:
        store.close()
