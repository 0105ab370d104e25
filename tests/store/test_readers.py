"""Reads from other threads run on per-thread connections beside the writer. Closing the
store while one of them is mid-query once freed the connection under it and sqlite3
segfaulted (CI, tests/sim/test_store_lights_deadlock.py). The check runs in a child
process so that a crash fails this test instead of killing the whole run."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import sys, threading, time
    from station.store.db import Store, StoreError

    store = Store(sys.argv[1]).open()
    SLOW = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000) "
            "SELECT count(*) AS c FROM n")
    outcomes, started = [], threading.Barrier(9)

    def reader():
        started.wait()
        try:
            while True:
                outcomes.append(store.query(SLOW)[0]["c"])
        except StoreError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    started.wait()
    while len(outcomes) < 16:  # every reader is busy in its loop of queries
        time.sleep(0.001)
    store.close()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads), "a reader hangs after close"
    errors = [o for o in outcomes if isinstance(o, str)]
    assert len(errors) == 8 and all("not open" in e or "closed" in e for e in errors), outcomes
    assert all(o == 200000 for o in outcomes if not isinstance(o, str)), outcomes
    assert len(outcomes) - len(errors) >= 16
    print("ok", len(outcomes))
""")


def test_closing_the_store_waits_for_reads_in_flight_on_other_threads(tmp_path: Path) -> None:
    for attempt in range(3):
        proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / f"s{attempt}.db")],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"child died ({proc.returncode}): {proc.stderr[-2000:]}"
        assert proc.stdout.startswith("ok")


def test_a_thread_that_ends_leaves_no_connection_open(tmp_path: Path) -> None:
    """Worker threads come and go (anyio retires idle ones after 10 s); each one's read
    connection must close with it, or a station running for weeks runs out of files."""
    import gc
    import os
    import threading

    from station.store.db import Store

    store = Store(tmp_path / "s.db").open()
    try:
        def read() -> None:
            assert store.query("SELECT count(*) AS n FROM events")[0]["n"] == 0

        def open_files() -> int:
            return len(os.listdir("/proc/self/fd"))

        for _ in range(3):  # warm up whatever the first reads open once
            t = threading.Thread(target=read)
            t.start()
            t.join()
        gc.collect()
        before = open_files()
        for _ in range(60):
            t = threading.Thread(target=read)
            t.start()
            t.join()
        gc.collect()
        assert open_files() - before < 5, f"{open_files() - before} files left open by 60 threads"
        read()  # and this thread's own reads still work
    finally:
        store.close()
