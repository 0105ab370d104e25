"""The station's SQLite store: one writer connection, one transaction per fact.

`with store.transaction() as tx: tx.emit(Event(...))` appends the event to the hash-chained
log and applies it to the projection tables in the same SQLite transaction; side tables are
written through `tx.conn` inside the same transaction. WAL with synchronous=FULL: a
committed fact survives a power cut."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .eventlog import (
    GENESIS,
    Event,
    EventRecord,
    canonical_json,
    parse_utc,
    read_back,
    row_hash,
    stamp,
)
from .projections import apply_event
from .schema import migrate

Listener = Callable[[Sequence[EventRecord]], None]
log = logging.getLogger("station.store")


class StoreError(RuntimeError):
    """The store cannot take this change; the message is meant for a person."""


class StoreFull(StoreError):
    pass


class StoreLow(StoreFull):
    """The disk budget's reserve is reached: new work is refused before it starts."""


# The WAL grows without bound while a reader holds an old snapshot (it cannot be reset past
# it) and SQLite never shrinks the file by itself: with this limit the first reset after the
# reader is gone truncates it back (#22.9; 3.4 MB -> 37.6 MB -> 37.6 MB before). Above the
# ~4 MB the 1,000-page autocheckpoint lets it reach in normal running, so it is not regrown
# and truncated on every cycle.
WAL_LIMIT_BYTES = 8 * 1024 * 1024


def connect(path: str | Path) -> sqlite3.Connection:
    path = Path(path)
    if str(path) != ":memory:":
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
    return conn


class Tx:
    """A transaction in progress: append events and write side tables."""

    def __init__(self, store: Store, conn: sqlite3.Connection, now: float) -> None:
        self._store = store
        self.conn = conn
        self.now = now
        self.events: list[EventRecord] = []

    def emit(self, event: Event) -> EventRecord:
        return self._store._append(self, event)

    def execute(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, args)


class Store:
    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._last_seq = 0
        self._last_hash = GENESIS
        self._last_ts = ""
        # PRAGMA data_version as last seen: it moves only when another connection commits,
        # so while it stands still the chain's tip is the one this process last wrote
        self._data_version: int | None = None
        self._listeners: list[Listener] = []
        self._current: Tx | None = None  # the open transaction; only its thread sees it (the lock)
        self._tx_thread: int | None = None  # the thread that has it open
        # reads from other threads go through a connection of their own (WAL readers run
        # beside the writer) instead of queueing behind a transaction and its fsync
        self._readers = threading.local()
        # weak: a thread that ends drops its reader and the reader closes its connection, so
        # worker threads that come and go (anyio retires idle ones) leave no file open
        self._reader_conns: weakref.WeakSet[_Reader] = weakref.WeakSet()
        self._committed = threading.Condition()  # notified after every commit (long polls)
        # how many wait on it: counted under its lock before they read last_seq, so a commit
        # that sees none waiting may skip the lock (a waiter that comes later reads the new
        # seq and does not wait); most commits have nobody waiting
        self._waiters = 0
        # the disk budget (store/space.py), set by bootstrap: a sentence when new work must
        # be refused, None while there is room
        self.space_guard: Callable[[], str | None] | None = None
        # the room cameras (vision/room.py), set by bootstrap: names the pictures an event is
        # to carry before it is hashed, so the reference commits with the event; it never waits
        self.witness: Callable[[Event], Event] | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def open(self) -> Store:
        with self._lock:
            if self._conn is None:
                try:
                    conn = connect(self.path)
                    migrate(conn)
                except (sqlite3.DatabaseError, RuntimeError) as exc:
                    raise StoreError(f"{self.path}: cannot open the database: {exc}") from None
                self._conn = conn
                row = _tip(conn)
                if row:
                    self._last_seq, self._last_hash, self._last_ts = row
                self._data_version = _data_version(conn)
        return self

    def close(self) -> None:
        with self._lock:
            for reader in list(self._reader_conns):
                reader.close()  # waits for a query in flight: closing under it crashes sqlite
            self._reader_conns.clear()
            self._readers = threading.local()
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Store:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the store is not open")
        return self._conn

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def subscribe(self, listener: Listener) -> None:
        """Called after each commit with its events (pages, upstream forwarder)."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    # --- writing ----------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """One SQLite transaction. Opened again on the thread that holds one, it joins it:
        a use case made of steps (a sensed placement and the binding it causes) commits as
        one fact or not at all."""
        with self._lock:
            if self._current is not None:
                yield self._current
                return
            conn = self.conn
            saved = (self._last_seq, self._last_hash, self._last_ts, self._data_version)
            try:
                conn.execute("BEGIN IMMEDIATE")
                # another process (the CLI beside a running station) may have appended:
                # the chain continues from what is on disk, read under the write lock. Only
                # a commit by another connection moves data_version (our own never do), so
                # the tip is read again only then, not on every transaction
                version = _data_version(conn)
                if version != self._data_version:
                    row = _tip(conn)
                    if row:
                        self._last_seq, self._last_hash, self._last_ts = row
                    self._data_version = version
            except sqlite3.OperationalError as exc:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.OperationalError:
                    pass
                raise _translate(exc) from None
            tx = Tx(self, conn, self.clock())
            self._current, self._tx_thread = tx, threading.get_ident()
            try:
                yield tx
                self._current, self._tx_thread = None, None
                conn.execute("COMMIT")
            except BaseException as exc:
                self._current, self._tx_thread = None, None
                self._last_seq, self._last_hash, self._last_ts, self._data_version = saved
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.OperationalError:
                    pass
                if isinstance(exc, sqlite3.OperationalError):
                    raise _translate(exc) from None
                raise
        if tx.events:
            if self._waiters:
                with self._committed:
                    self._committed.notify_all()
            for listener in list(self._listeners):
                try:
                    listener(tx.events)
                except Exception:  # a broken listener must not undo a committed fact
                    pass

    def check_room(self) -> None:
        """Refuse new work (a shelving session, a scan) while the disk is below its reserve,
        before any transaction starts, instead of a commit failing half way (ADR 0102)."""
        guard = self.space_guard
        if guard is not None:
            why = guard()
            if why:
                raise StoreLow(why)

    def wait_for_commit(self, after_seq: int, timeout: float) -> bool:
        """Block until an event past `after_seq` is committed (True) or `timeout` passes:
        lets a caller wait for a fact instead of polling the database for it."""
        deadline = time.monotonic() + timeout
        with self._committed:
            self._waiters += 1
            try:
                while self._last_seq <= after_seq:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._committed.wait(left)
            finally:
                self._waiters -= 1
        return True

    def append(self, *events: Event) -> list[EventRecord]:
        with self.transaction() as tx:
            return [tx.emit(e) for e in events]

    def _append(self, tx: Tx, event: Event) -> EventRecord:
        if self.witness is not None:
            try:
                event = self.witness(event)
            except Exception:  # a camera's trouble never costs the fact its event records
                log.exception("room witness failed for %s", event.type)
        seq = self._last_seq + 1
        ts, at = stamp(tx.now)
        if ts < self._last_ts:  # a clock step back must not reorder the log's times
            ts, at = self._last_ts, parse_utc(self._last_ts)
        data_json = canonical_json(event.data)
        digest = row_hash(
            seq, ts, event.type, event.actor, event.subject, data_json, event.snapshot,
            self._last_hash,
        )
        tx.conn.execute(
            "INSERT INTO events(seq, ts, type, actor, subject, data, snapshot, prev_hash, hash)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            (seq, ts, event.type, event.actor, event.subject, data_json, event.snapshot,
             self._last_hash, digest),
        )
        record = EventRecord(
            seq, ts, event.type, event.actor, event.subject, read_back(event.data, data_json),
            event.snapshot, self._last_hash, digest,
        )
        apply_event(tx.conn, record, at)
        self._last_seq, self._last_hash, self._last_ts = seq, digest, ts
        tx.events.append(record)
        return record

    # --- reading ----------------------------------------------------------------------------

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        if self._tx_thread == threading.get_ident() or str(self.path) == ":memory:":
            with self._lock:  # inside our own transaction: we must see what it wrote
                return _rows(self.conn.execute(sql, args))
        return self._reader().rows(sql, args)

    def _reader(self) -> _Reader:
        reader: _Reader | None = getattr(self._readers, "reader", None)
        if reader is None:
            with self._lock:
                if self._conn is None:
                    raise StoreError("the store is not open")
                reader = _Reader(self.path)
                self._readers.reader = reader
                self._reader_conns.add(reader)
        return reader

    def query_one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        rows = self.query(sql, args)
        return rows[0] if rows else None

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The writer's own connection under the station's lock: for short reads that must
        see the latest commit. Never for a walk over the log (that is `snapshot`)."""
        with self._lock:
            yield self.conn

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction on a connection of its own, for the operator's long reads
        (verify, replay, export, listings): in WAL mode it sees one consistent state of the
        log while commits go on beside it, so a walk over two million events never holds the
        lock a door, a light or a placement waits for (#22.7). The WAL cannot be checkpointed
        past a snapshot while it is open; `journal_size_limit` shrinks it afterwards."""
        if str(self.path) == ":memory:":  # one connection is all there is
            with self.reading() as conn:
                yield conn
            return
        if self._conn is None:
            raise StoreError("the store is not open")
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False,
                               timeout=10)
        try:
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("PRAGMA query_only=ON")
            conn.execute("BEGIN")
            conn.execute("SELECT COUNT(*) FROM meta").fetchone()  # the snapshot starts here
            yield conn
        finally:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            conn.close()


class _Reader:
    """One thread's read connection. Its lock is held for each query so that `Store.close`
    from another thread waits for the query instead of freeing the connection under it
    (sqlite3 segfaults on that)."""

    def __init__(self, path: Path) -> None:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10)
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA query_only=ON")
        self._conn: sqlite3.Connection | None = conn
        self._lock = threading.Lock()
        # the owning thread has ended (nobody can be mid-query): close with the last reference
        weakref.finalize(self, conn.close)

    def rows(self, sql: str, args: Sequence[Any]) -> list[dict[str, Any]]:
        with self._lock:
            if self._conn is None:
                raise StoreError("the store is closed")
            return _rows(self._conn.execute(sql, args))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _data_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def _tip(conn: sqlite3.Connection) -> tuple[int, str, str] | None:
    """The chain's last link: the newest live event or, when retention has moved every
    event to the archive, the checkpoint (the next event continues from it, never from 1)."""
    row = conn.execute("SELECT seq, hash, ts FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    if row is None:
        row = conn.execute("SELECT seq, hash, ts FROM log_checkpoint WHERE id = 1").fetchone()
    return row


def _rows(cur: sqlite3.Cursor) -> list[dict[str, Any]]:
    """Rows readable by column name (row["state"]) and as JSON: plain dicts, built in C (a
    dict subclass with an __init__ of its own cost twice as much on every query)."""
    cols = [c[0] for c in cur.description or ()]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def _translate(exc: sqlite3.OperationalError) -> StoreError:
    text = str(exc)
    if "full" in text:
        return StoreFull("the station's disk is full: new work is refused until space is freed")
    return StoreError(f"the database refused the change: {text}")
