"""Retention of the event log into archive segments (#16): old events leave the live
database only after their segment is durable and recorded; verify walks the live chain from
the checkpoint and, with the archive, everything end to end; a changed byte in a segment is
named; replay over archive + live rebuilds the projections on disk; the fleet's cursor holds
back what it has not acknowledged; a crash in the middle of a prune loses nothing."""

from __future__ import annotations

import gzip
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from station.config import Secrets
from station.domain.errors import DomainError
from station.store.archive import iter_all_events, recorded_segments, verify_log
from station.store.db import Store
from station.store.eventlog import Event
from station.store.projections import dump_projections
from station.store.replay import replay_into
from station.store.retention import Retention
from tests.flows.harness import make_station

from .test_replay import RandomWalk

ROOT = Path(__file__).resolve().parents[2]
DAY = 86400.0
T0 = 1_767_225_600.0


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def history(path: Path, days: int = 10, per_day: int = 100) -> tuple[Store, Clock]:
    clock = Clock()
    store = Store(path, clock=clock).open()
    for d in range(days):
        clock.t = T0 + d * DAY  # a transaction's events carry the time it began
        with store.transaction() as tx:
            for i in range(per_day):
                tx.emit(Event("note.test", f"s-{d}-{i}", "tester", {"day": d, "i": i, "pad": "p" * 30}))
    return store, clock


def live_seqs(store: Store) -> list[int]:
    return [r["seq"] for r in store.query("SELECT seq FROM events ORDER BY seq")]


def test_old_events_move_to_segments_and_verify_walks_archive_and_live(tmp_path: Path) -> None:
    store, clock = history(tmp_path / "s.db")
    archive = tmp_path / "archive"
    clock.t = T0 + 10 * DAY
    run = Retention(store, archive, keep_days=3, segment_events=100, batch_events=37).run(clock.t)
    # days 0..6 (700 events) are older than 3 days at day 10 minus a bit: whole segments only
    assert run.segments == 7 and run.archived == 700 and run.through_seq == 700
    assert run.deleted == 700
    seqs = live_seqs(store)
    assert seqs[0] == 701 and seqs[-1] == store.last_seq  # 300 live + log.archived + retention.applied
    assert sorted(p.name for p in archive.iterdir()) == [
        f"events-{a:012d}-{a + 99:012d}.jsonl.gz" for a in range(1, 701, 100)]
    with store.snapshot() as conn:
        live = verify_log(conn)
        assert live.ok and live.checkpoint_seq == 700 and live.checked == store.last_seq - 700
        full = verify_log(conn, archive)
        assert full.ok and full.archived_checked == 700 and full.segments == 7, full
        assert [e.seq for e in iter_all_events(conn, archive)] == list(range(1, store.last_seq + 1))
    store.close()


def test_a_deleted_event_above_the_checkpoint_is_refused(tmp_path: Path) -> None:
    store, clock = history(tmp_path / "s.db", days=2)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.conn.execute("DELETE FROM events WHERE seq = 5")
    store.close()


def test_one_changed_byte_in_a_segment_is_named(tmp_path: Path) -> None:
    store, clock = history(tmp_path / "s.db")
    archive = tmp_path / "archive"
    clock.t = T0 + 10 * DAY
    Retention(store, archive, keep_days=3, segment_events=100).run(clock.t)
    target = archive / "events-000000000301-000000000400.jsonl.gz"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with store.snapshot() as conn:
        result = verify_log(conn, archive)
        assert not result.ok and result.bad_segment == target.name, result
        assert target.name in result.problem and result.first_bad_seq == 301
        assert verify_log(conn).ok  # the live chain from the checkpoint still holds
    store.close()


def test_a_rewritten_segment_with_a_consistent_file_hash_is_caught_by_the_chain(tmp_path: Path) -> None:
    """Someone who rewrites a segment and updates its recorded SHA-256 still breaks the chain."""
    store, clock = history(tmp_path / "s.db")
    archive = tmp_path / "archive"
    clock.t = T0 + 10 * DAY
    Retention(store, archive, keep_days=3, segment_events=100).run(clock.t)
    target = archive / "events-000000000201-000000000300.jsonl.gz"
    lines = gzip.decompress(target.read_bytes()).decode().splitlines()
    lines[10] = lines[10].replace('ppp', 'ppq', 1)
    target.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))
    import hashlib
    store.conn.execute("UPDATE archive_segments SET sha256 = ? WHERE first_seq = 201",
                       (hashlib.sha256(target.read_bytes()).hexdigest(),))
    with store.snapshot() as conn:
        result = verify_log(conn, archive)
    assert not result.ok and result.first_bad_seq == 211 and target.name in result.problem, result
    store.close()


def test_the_fleet_cursor_holds_back_what_it_has_not_acknowledged(tmp_path: Path) -> None:
    store, clock = history(tmp_path / "s.db")
    store.conn.execute("INSERT INTO upstream_cursor(name, seq) VALUES ('upstream', 250)")
    clock.t = T0 + 10 * DAY
    run = Retention(store, tmp_path / "a", keep_days=3, segment_events=100, upstream=True).run(clock.t)
    assert run.held_by_upstream and run.through_seq == 250  # nothing past what the fleet acknowledged
    assert live_seqs(store)[0] == 251
    # with no cursor at all (the fleet has acknowledged nothing) nothing goes
    store2, clock2 = history(tmp_path / "t.db")
    clock2.t = T0 + 10 * DAY
    run2 = Retention(store2, tmp_path / "b", keep_days=3, segment_events=100, upstream=True).run(clock2.t)
    assert run2.segments == 0 and live_seqs(store2)[0] == 1
    store.close()
    store2.close()


def test_after_everything_is_archived_the_chain_continues_from_the_checkpoint(tmp_path: Path) -> None:
    store, clock = history(tmp_path / "s.db", days=3)
    clock.t = T0 + 30 * DAY
    Retention(store, tmp_path / "a", keep_days=1, segment_events=100).run(clock.t)
    # the run's own two events are live; archive them as well by a later run
    clock.t += 3 * DAY
    Retention(store, tmp_path / "a", keep_days=1, segment_events=2).run(clock.t)
    store.close()
    again = Store(tmp_path / "s.db", clock=clock).open()
    seq = again.append(Event("note.test", "after", "tester", {}))[0].seq
    with again.snapshot() as conn:
        cp = conn.execute("SELECT seq FROM log_checkpoint").fetchone()[0]
        assert seq > cp >= 300
        assert verify_log(conn, tmp_path / "a").ok
    again.close()


def test_replay_over_archive_and_live_rebuilds_the_projections(tmp_path: Path, secrets: Secrets) -> None:
    """DESIGN §3 after retention: a random walk of the station's own flows over simulated
    days, retention run every few hours (finished parcels and closed sessions leave the
    projections through `retention.applied`), then a replay of archive + live from seq 1
    gives exactly the tables on disk, and the whole log verifies end to end."""
    st = make_station(tmp_path, secrets, seed=7)
    walk = RandomWalk(st, random.Random(11))
    archive = tmp_path / "archive"
    retention = Retention(st.store, archive, keep_days=1, segment_events=40, batch_events=15)
    ids = random.Random(5)
    patch = pytest.MonkeyPatch()
    patch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=ids.getrandbits(128), version=4))
    runs = []
    try:
        def step(i: int) -> None:
            st.clock.advance(900)  # a quarter of an hour between operations
            if i % 40 == 0:
                runs.append(retention.run(st.clock()))

        walk.run(800, step)
    finally:
        patch.undo()
    assert sum(r.segments for r in runs) >= 5
    with st.store.snapshot() as conn:
        applied = [e for e in iter_all_events(conn, archive) if e.type == "retention.applied"]
    assert len(applied) >= 5
    live = dump_projections(st.store.conn)
    out = tmp_path / "replayed.db"
    with st.store.snapshot() as conn:
        assert verify_log(conn, archive).ok
        last = replay_into(conn, out, archive_dir=archive)
    assert last == st.store.last_seq
    with sqlite3.connect(out) as replayed:
        assert dump_projections(replayed) == live
    # without the archive the pruned log cannot be replayed from its start: said clearly
    with st.store.snapshot() as conn, pytest.raises(FileNotFoundError, match="archive"):
        replay_into(conn, tmp_path / "no-archive.db")
    st.store.close()


def test_retention_never_drops_a_live_parcel(tmp_path: Path, secrets: Secrets) -> None:
    st = make_station(tmp_path, secrets, seed=3)
    walk = RandomWalk(st, random.Random(4))
    walk.run(300, lambda i: st.clock.advance(600))
    waiting = {r["id"] for r in st.store.query("SELECT id FROM parcels WHERE state NOT IN "
                                               "('picked_up', 'returned', 'collected')")}
    st.clock.advance(30 * DAY)
    Retention(st.store, tmp_path / "a", keep_days=1, segment_events=50).run(st.clock())
    left = {r["id"] for r in st.store.query("SELECT id FROM parcels")}
    assert waiting and waiting <= left
    assert not st.store.query("SELECT 1 FROM parcels WHERE state IN ('picked_up', 'returned', 'collected')")
    st.store.close()


def test_answered_takes_and_the_exits_of_gone_sessions_leave_with_them(tmp_path: Path, secrets: Secrets) -> None:
    """They were one row each per parcel ever, and grew after retention at 150 parcels a day
    (the two-years benchmark, #16); an open take stays whatever its age."""
    st = make_station(tmp_path, secrets, seed=3)
    walk = RandomWalk(st, random.Random(4))
    walk.run(300, lambda i: st.clock.advance(600))
    answered = st.store.query_one("SELECT COUNT(*) n FROM takes WHERE resolved_seq IS NOT NULL")["n"]
    exits = st.store.query_one("SELECT COUNT(*) n FROM session_exits")["n"]
    assert answered and exits
    with st.store.transaction() as tx:  # a take nobody answered for, older than the cut
        tx.execute("INSERT INTO takes(seq, slot, session_id, at) VALUES (?, '1-1-01', NULL, ?)",
                   (st.store.last_seq, st.clock() - 2 * DAY))
    st.clock.advance(30 * DAY)
    Retention(st.store, tmp_path / "a", keep_days=1, segment_events=50).run(st.clock())
    assert not st.store.query("SELECT 1 FROM takes WHERE resolved_seq IS NOT NULL")
    assert len(st.store.query("SELECT 1 FROM takes WHERE resolved_seq IS NULL")) >= 1
    assert not st.store.query("SELECT 1 FROM session_exits WHERE session_id NOT IN (SELECT id FROM sessions)")
    st.store.close()


CHILD = textwrap.dedent("""
    import sys
    from station.store.db import Store
    from station.store.retention import Retention
    store = Store(sys.argv[1]).open()
    r = Retention(store, sys.argv[2], keep_days=1, segment_events=int(sys.argv[3]), batch_events=7)
    original = r._archive
    def archive(first, last):
        n = original(first, last)
        print("archived", first, last, flush=True)
        return n
    r._archive = archive
    r.run(float(sys.argv[4]))
    print("done", flush=True)
""")


@pytest.mark.parametrize("kill_after", [1, 3, 6])
def test_a_prune_killed_midway_loses_nothing_and_verify_knows(tmp_path: Path, kill_after: int) -> None:
    """kill -9 of a pruning child at different points (mid-write of a segment, between its
    record and the deletes, during the deletes): every event is still in the live log or a
    recorded segment, any event in both places is known to verify (below the checkpoint, or
    in an unrecorded file), and the next run finishes the job with a clean verify."""
    store, clock = history(tmp_path / "s.db", days=20, per_day=150)
    total = store.last_seq
    store.close()
    archive = tmp_path / "archive"
    now = T0 + 22 * DAY
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "s.db"), str(archive), "250",
                             str(now)], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    assert proc.stdout is not None
    seen = 0
    for line in proc.stdout:
        if line.startswith("archived"):
            seen += 1
            if seen == kill_after:
                break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    store = Store(tmp_path / "s.db", clock=clock).open()
    with store.snapshot() as conn:
        result = verify_log(conn, archive)
        assert result.ok, result
        cp = result.checkpoint_seq
        assert cp >= kill_after * 250
        live = {r[0] for r in conn.execute("SELECT seq FROM events WHERE seq <= ?", (total,))}
        archived = {e.seq for e in iter_all_events(conn, archive) if e.seq <= cp}
        assert live | archived == set(range(1, total + 1)), "an event was lost"
        both = live & archived
        assert len(both) == result.pending_delete  # in both places only where verify says so
        assert all(s <= cp for s in both)
        unrecorded = {p.name for p in archive.iterdir() if p.name.startswith("events-")} - {
            s["file"] for s in recorded_segments(conn)}
        assert len(unrecorded) <= 1 and all("not recorded" in n or "still live" in n for n in result.notes
                                            if "recorded" in n)
    clock.t = now
    Retention(store, archive, keep_days=1, segment_events=250, batch_events=7).run(now)
    with store.snapshot() as conn:
        final = verify_log(conn, archive)
        assert final.ok and final.pending_delete == 0 and not any("not recorded" in n for n in final.notes)
        assert final.archived_checked + final.checked == store.last_seq
    store.close()


def _refused(fn: Any) -> bool:
    try:
        fn()
    except DomainError:
        return True
    return False


def test_cli_verify_and_replay_over_the_archive_name_a_changed_segment(tmp_path: Path) -> None:
    from .test_eventlog import run_cli

    store, clock = history(tmp_path / "s.db")
    archive = tmp_path / "archive"
    Retention(store, archive, keep_days=3, segment_events=100).run(T0 + 10 * DAY)
    store.close()
    db = str(tmp_path / "s.db")
    live = run_cli("log", "verify", "--db", db)
    assert live.returncode == 0 and "from the checkpoint at seq 700" in live.stdout, live.stdout
    full = run_cli("log", "verify", "--db", db, "--archive", str(archive))
    assert full.returncode == 0 and "700 archived events in 7 segments" in full.stdout, full.stdout
    replay = run_cli("log", "replay", "--db", db, "--archive", str(archive), "--until", "650",
                     "--out", str(tmp_path / "then.db"))
    assert replay.returncode == 0 and "1..650" in replay.stdout, replay.stderr
    no_archive = run_cli("log", "replay", "--db", db, "--out", str(tmp_path / "x.db"))
    assert no_archive.returncode == 2 and "archive" in no_archive.stderr
    target = archive / "events-000000000501-000000000600.jsonl.gz"
    data = bytearray(target.read_bytes())
    data[40] ^= 0x10
    target.write_bytes(bytes(data))
    broken = run_cli("log", "verify", "--db", db, "--archive", str(archive))
    assert broken.returncode == 1 and target.name in broken.stderr and "seq 501" in broken.stderr, broken.stderr


def test_the_operator_api_replays_and_verifies_over_archive_and_live(tmp_path: Path, secrets: Secrets) -> None:
    from station.api import operator
    from station.api.auth import Principal
    from station.api.services import Services
    from tests.flows.harness import config_for

    config = config_for(tmp_path)
    config = config.model_copy(update={"retention": config.retention.model_copy(
        update={"enabled": True, "archive_dir": str(tmp_path / "archive"), "keep_days": 1})})
    st = make_station(tmp_path, secrets, config=config)
    st.add_courier()
    for n in range(30):
        st.shelve(f"SF{n + 1:013d}", f"138{n:08d}")
        st.clock.advance(3600)
    st.clock.advance(5 * DAY)
    run = Retention(st.store, tmp_path / "archive", keep_days=1, segment_events=20).run(st.clock())
    assert run.through_seq > 50
    svc = Services(core=st.core)
    who = Principal("operator", "op")
    view = operator.replay(seq=30, at=None, who=who, svc=svc)  # an instant inside the archive
    assert view["event"]["seq"] == 30
    full = operator.verify(archive=True, who=who, svc=svc)
    assert full["ok"] and full["archived_checked"] == run.through_seq and full["segments"] == run.segments
    live = operator.verify(archive=False, who=who, svc=svc)
    assert live["ok"] and live["checkpoint_seq"] == run.through_seq and live["archived_checked"] == 0
    st.store.close()


def test_retention_runs_beside_a_live_station_that_keeps_committing(tmp_path: Path) -> None:
    """The real station (broker, firmware, link) with retention on: a run moving its log to
    the archive while it works leaves one chain that verifies end to end, and the station
    goes on appending after the checkpoint."""
    import time as _time

    from tests.support.stack import LiveStation

    archive = tmp_path / "archive"
    with LiveStation(tmp_path / "live", sections={"retention": {
            "enabled": True, "archive_dir": str(archive), "keep_days": 1, "segment_events": 5}}) as live:
        keeper = live.station.housekeeping.keeper  # type: ignore[union-attr]
        assert keeper.retention is not None
        store = live.station.store
        live.core.couriers.add("c1", "SF", "Li", "1234")
        run = keeper.retention.run(_time.time() + 3 * DAY)  # as if three days had passed
        assert run.segments >= 1 and run.through_seq >= 5
        live.core.couriers.add("c2", "SF", "Wang", "1234")
        with store.snapshot() as conn:  # the station goes on committing: count in the snapshot
            result = verify_log(conn, archive)
            tip = conn.execute("SELECT MAX(seq) FROM events").fetchone()[0]
        assert result.ok and result.checkpoint_seq == run.through_seq, result
        assert result.archived_checked + result.checked == tip


def test_a_run_stops_between_segments_when_asked(tmp_path: Path) -> None:
    """A station shutting down does not wait for a first run over years of history."""
    store, clock = history(tmp_path / "s.db")
    asked: list[int] = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) > 2

    run = Retention(store, tmp_path / "a", keep_days=3, segment_events=100).run(T0 + 10 * DAY, stop=stop)
    assert run.segments == 2 and run.through_seq == 200
    with store.snapshot() as conn:
        assert verify_log(conn, tmp_path / "a").ok
    store.close()
