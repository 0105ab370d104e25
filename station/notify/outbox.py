"""The durable notification outbox and the dispatcher that empties it (ADR 0030).

A notification is written in the same SQLite transaction as the fact that causes it, so a
shelved parcel and the message with its pickup code exist together or not at all. The
dispatcher delivers at least once: a row leaves `pending` only in the transaction that
records `notify.sent`, so a crash at any point leaves it due again.

The payload holds a phone number and a pickup code; it is sealed with AES-GCM under a key
derived from the station's encryption key, with the row id as associated data (a payload
copied onto another row does not open). Events about the outbox carry the row id, the
subject, the channel and the masked number only.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from station.clocks import Stamp, SteadyDeadlines
from station.crypto import DecryptError, Sealer
from station.store.db import Store, Tx
from station.store.eventlog import Event, EventRecord, utc_iso

from .messages import Notification
from .senders import Sender, SendError

log = logging.getLogger("station.notify")

PENDING = "pending"
DELIVERED = "delivered"
DEFAULT_CHANNEL = "default"
ACTOR = "notify"


class PayloadError(RuntimeError):
    """A payload that does not open: wrong key, or the row was tampered with."""


@dataclass(frozen=True)
class OutboxRow:
    """A row as the dispatcher sees it; `payload` is the sealed bytes, never clear text."""

    id: str
    created_at: float
    channel: str
    subject: str
    state: str
    attempts: int
    next_at: float
    last_error: str | None
    delivered_at: float | None
    payload: bytes = b""


class Outbox:
    """Notifications waiting to go out, encrypted at rest, in the station's database."""

    def __init__(self, store: Store, cipher_key: bytes,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._sealer = Sealer(cipher_key, "outbox-payload")
        self._clock = clock

    @property
    def store(self) -> Store:
        return self._store

    # --- writing, inside the caller's transaction -----------------------------------------

    def enqueue(self, tx: Tx, channel_hint: str | None, subject: str,
                message: Notification | Mapping[str, Any]) -> str:
        """Queue one notification in `tx`; it commits or rolls back with the caller's fact.

        `channel_hint` names a sender (`webhook`, `mqtt`, `console`, `webhook-2` ...); any
        other value, or None, means the first configured sender. It is resolved when the row
        is sent, so a configuration change never strands a row.
        """
        notification = Notification.parse(message)
        row_id = uuid.uuid4().hex
        channel = channel_hint or DEFAULT_CHANNEL
        now = tx.now
        tx.execute(
            "INSERT INTO outbox(id, created_at, channel, subject, payload, state, attempts,"
            " next_at) VALUES (?,?,?,?,?,?,0,?)",
            (row_id, now, channel, subject, self._seal(row_id, notification), PENDING, now),
        )
        tx.emit(Event(
            "notify.queued", subject=subject, actor=ACTOR,
            data={"outbox_id": row_id, "channel": channel, "kind": notification.kind,
                  "phone_masked": notification.phone_masked},
        ))
        return row_id

    # --- reading ---------------------------------------------------------------------------

    def heads(self) -> list[OutboxRow]:
        """The oldest pending row of each subject, oldest first.

        Only a subject's oldest row may be sent, so a later message about a parcel never
        overtakes an earlier one that is still being retried.
        """
        rows = self._store.query(
            "SELECT id, created_at, channel, subject, state, attempts, next_at, last_error,"
            " delivered_at FROM ("
            "  SELECT *, rowid AS rid, ROW_NUMBER() OVER"
            "   (PARTITION BY subject ORDER BY created_at, rowid) AS rn"
            "  FROM outbox WHERE state = ?"
            ") WHERE rn = 1 ORDER BY created_at, rid",
            (PENDING,),
        )
        return [OutboxRow(**r) for r in rows]

    def get(self, row_id: str) -> OutboxRow | None:
        row = self._store.query_one(
            "SELECT id, created_at, channel, subject, state, attempts, next_at, last_error,"
            " delivered_at, payload FROM outbox WHERE id = ?",
            (row_id,),
        )
        return None if row is None else OutboxRow(**row)

    def pending_count(self) -> int:
        row = self._store.query_one("SELECT COUNT(*) AS n FROM outbox WHERE state = ?", (PENDING,))
        return int(row["n"]) if row else 0

    def open_payload(self, row_id: str) -> Notification:
        row = self._store.query_one("SELECT payload FROM outbox WHERE id = ?", (row_id,))
        if row is None:
            raise PayloadError(f"no outbox row {row_id}")
        return self._open(row_id, bytes(row["payload"]))

    # --- outcomes --------------------------------------------------------------------------

    def mark_sent(self, row: OutboxRow, notification: Notification, sender: str,
                  now: float) -> bool:
        """Record delivery: the row leaves `pending` and `notify.sent` is appended together.

        The sealed payload is wiped: once delivered, the code has no reason to stay on disk.
        Returns False when another dispatcher recorded the delivery first.
        """
        with self._store.transaction() as tx:
            cur = tx.execute(
                "UPDATE outbox SET state = ?, delivered_at = ?, attempts = attempts + 1,"
                " last_error = NULL, payload = X'' WHERE id = ? AND state = ?",
                (DELIVERED, now, row.id, PENDING),
            )
            if cur.rowcount != 1:
                return False
            tx.emit(Event(
                "notify.sent", subject=row.subject, actor=ACTOR,
                data={"outbox_id": row.id, "channel": row.channel, "sender": sender,
                      "kind": notification.kind, "phone_masked": notification.phone_masked,
                      "attempt": row.attempts + 1},
            ))
        return True

    def mark_failed(self, row: OutboxRow, notification: Notification | None, sender: str,
                    error: str, retry_at: float) -> None:
        with self._store.transaction() as tx:
            cur = tx.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_at = ?, last_error = ?"
                " WHERE id = ? AND state = ?",
                (retry_at, error[:200], row.id, PENDING),
            )
            if cur.rowcount != 1:
                return
            tx.emit(Event(
                "notify.failed", subject=row.subject, actor=ACTOR,
                data={"outbox_id": row.id, "channel": row.channel, "sender": sender,
                      "kind": notification.kind if notification else None,
                      "phone_masked": notification.phone_masked if notification else "",
                      "attempt": row.attempts + 1, "error": error[:200],
                      "retry_at": utc_iso(retry_at)},
            ))

    # --- sealing ---------------------------------------------------------------------------

    def _seal(self, row_id: str, notification: Notification) -> bytes:
        clear = notification.model_dump_json(exclude_defaults=True).encode()
        return self._sealer.seal(clear, row_id)

    def _open(self, row_id: str, sealed: bytes) -> Notification:
        if not sealed:
            raise PayloadError("payload is empty (wiped after delivery)")
        try:
            clear = self._sealer.open(sealed, row_id)
        except DecryptError as exc:
            raise PayloadError(f"payload does not open for this row: {exc}") from None
        return Notification.model_validate_json(clear)

    def open_row(self, row: OutboxRow) -> Notification:
        return self._open(row.id, row.payload)


@dataclass
class DispatchReport:
    attempted: int = 0
    sent: int = 0
    failed: int = 0
    sent_ids: list[str] = field(default_factory=list)


def backoff_delay(attempt: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff with "equal jitter": between half and all of
    min(max, initial * 2^(attempt-1)), so retries of many rows after one outage spread out
    instead of hitting a recovering gateway in one burst, and never exceed retry_max_s."""
    base = min(max_s, initial_s * (2 ** min(max(attempt - 1, 0), 60)))
    return base * (0.5 + 0.5 * rng.random())


class Dispatcher:
    """Takes due rows from the outbox and hands them to the senders.

    One dispatcher per database. Besides each row's own backoff, a sender whose way out is
    down (`SendError.channel_down`) is paused as a whole, with the same backoff counted over
    its consecutive failures: during a gateway outage one probe per interval goes out instead
    of one per waiting row, which keeps the event log from filling with `notify.failed`.
    A message refused on its own (a 4xx about that number) only backs off that row.

    Back-off is measured on the steady clock (`mono`, ADR 0070): a row's `next_at` is written
    as a wall-clock time (shown to operators, kept across restarts) but the wait it stands
    for is fixed on the monotonic clock when the dispatcher first sees it, and never longer
    than `retry_max_s`; a paused sender is paused on the monotonic clock. So a wall-clock
    step, in either direction, neither holds messages back nor sends them early.
    """

    def __init__(
        self,
        outbox: Outbox,
        senders: Sequence[Sender],
        *,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 300.0,
        clock: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        batch: int = 100,
        idle_poll_s: float = 5.0,
    ) -> None:
        if not senders:
            raise ValueError("the dispatcher needs at least one sender")
        self._outbox = outbox
        self._senders = list(senders)
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = max(retry_max_s, retry_initial_s)
        self._clock = clock
        self._mono = mono
        self._rng = rng or random.Random()
        self._batch = batch
        self._idle_poll_s = idle_poll_s
        self._due = SteadyDeadlines()  # rows' back-off, on the steady clock
        self._paused_until: dict[str, float] = {}  # sender -> steady time
        self._failures: dict[str, int] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- routing ---------------------------------------------------------------------------

    def resolve(self, channel: str) -> Sender:
        """The sender for a row's channel hint: by name, then by kind, else the first one."""
        for sender in self._senders:
            if sender.name == channel:
                return sender
        for sender in self._senders:
            if sender.name.split("-")[0] == channel:
                return sender
        return self._senders[0]

    # --- one pass --------------------------------------------------------------------------

    def _stamp(self, now: float | None, steady: float | None) -> Stamp:
        """Now on both clocks. A caller driving time (tests) passes `now`, and `steady` too
        when the two clocks are to differ; `now` alone stands for both."""
        if now is None:
            return Stamp(self._clock(), "", self._mono())
        return Stamp(now, "", now if steady is None else steady)

    def _row_due(self, row: OutboxRow, at: Stamp) -> bool:
        return self._due.due(row.id, row.next_at, at, self._retry_max_s)

    def run_once(self, now: float | None = None, *, steady: float | None = None) -> DispatchReport:
        """Send every row due at `now` (up to the batch size); tests drive time through it."""
        at = self._stamp(now, steady)
        now = at.wall
        report = DispatchReport()
        while report.attempted < self._batch:
            progressed = False
            for row in self._outbox.heads():
                if report.attempted >= self._batch or self._stopping.is_set():
                    break
                if not self._row_due(row, at):
                    continue
                sender = self.resolve(row.channel)
                if self._paused_until.get(sender.name, float("-inf")) > at.mono:
                    continue
                report.attempted += 1
                if self._attempt(row, sender, at):
                    report.sent += 1
                    report.sent_ids.append(row.id)
                    progressed = True
                else:
                    report.failed += 1
            if not progressed or self._stopping.is_set():
                break
        return report

    def _attempt(self, row: OutboxRow, sender: Sender, at: Stamp) -> bool:
        now = at.wall
        full = self._outbox.get(row.id)
        if full is None or full.state != PENDING:
            return False
        notification: Notification | None = None
        try:
            notification = self._outbox.open_row(full)
            sender.send(row.id, notification)
        except PayloadError as exc:
            log.error("outbox row %s: %s", row.id, exc)
            self._fail(full, None, sender, "payload: cannot open", at, pause=False)
            return False
        except SendError as exc:
            self._fail(full, notification, sender, str(exc), at, pause=exc.channel_down)
            return False
        except Exception as exc:  # a sender bug must not stop the other rows
            log.exception("sender %s raised unexpectedly", sender.name)
            self._fail(full, notification, sender, f"{sender.name}: {type(exc).__name__}",
                       at, pause=True)
            return False
        assert notification is not None
        self._failures.pop(sender.name, None)
        self._paused_until.pop(sender.name, None)
        self._due.forget(row.id)
        return self._outbox.mark_sent(full, notification, sender.name, now)

    def _fail(self, row: OutboxRow, notification: Notification | None, sender: Sender,
              error: str, at: Stamp, *, pause: bool) -> None:
        delay = backoff_delay(row.attempts + 1, self._retry_initial_s, self._retry_max_s, self._rng)
        retry_at = at.wall + delay
        self._outbox.mark_failed(row, notification, sender.name, error, retry_at)
        # the wait starts now on the steady clock, whatever the wall clock does next
        self._due.due(row.id, retry_at, at, self._retry_max_s)
        log.warning("outbox row %s via %s failed (attempt %d): %s", row.id, sender.name,
                    row.attempts + 1, error)
        if pause:
            count = self._failures.get(sender.name, 0) + 1
            self._failures[sender.name] = count
            self._paused_until[sender.name] = at.mono + backoff_delay(
                count, self._retry_initial_s, self._retry_max_s, self._rng
            )

    def next_wake(self, now: float, *, steady: float | None = None) -> float | None:
        """When (wall clock) the next row becomes sendable, given row backoff and paused
        senders; measured on the steady clock and given as a time from `now`."""
        at = self._stamp(now, steady)
        earliest: float | None = None
        for row in self._outbox.heads():
            self._row_due(row, at)
            left = max(self._due.left(row.id, at) or 0.0,
                       self._paused_until.get(self.resolve(row.channel).name, at.mono) - at.mono)
            earliest = left if earliest is None else min(earliest, left)
        return None if earliest is None else now + max(earliest, 0.0)

    # --- thread ----------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def _on_commit(self, events: Sequence[EventRecord]) -> None:
        if any(e.type == "notify.queued" for e in events):
            self._wake.set()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._outbox.store.subscribe(self._on_commit)
        self._thread = threading.Thread(target=self._run, name="notify-dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Stops after the send in progress; a row cut short stays pending and goes later."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._outbox.store.unsubscribe(self._on_commit)
        self._stopping.set()
        self._wake.set()
        thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                report = self.run_once()
                if report.attempted >= self._batch:
                    continue
                now, steady = self._clock(), self._mono()
                due = self.next_wake(now, steady=steady)
                wait = self._idle_poll_s if due is None else min(self._idle_poll_s, due - now)
            except Exception:  # the database may be briefly unavailable; never die silently
                log.exception("notification dispatcher pass failed")
                wait = self._idle_poll_s
            if wait > 0:
                self._wake.wait(wait)
