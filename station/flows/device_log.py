"""Device reports that are a trace, not a fact the station acts on (command outcomes, bad
messages, routine door reports), written in batches by a thread of their own.

Under load the link's one network thread spent a third of its time committing one
`command.acked` per transaction, and every ack behind it waited: the acks that HTTP
requests wait for. Placements, availability and door alarms are not batched: they change
state or raise alarms, and are committed before the broker hears they arrived (ADR 0018)."""

from __future__ import annotations

import logging
import queue
import threading

from station.store.db import Store, StoreError, Tx
from station.store.eventlog import Event
from station.store.projections import DEVICE_EVENT_TYPES

log = logging.getLogger("station.device_log")

# kinds that only record what a device said about a command or a message
TRACE_PREFIXES = ("command.", "device.bad_message", "device.command_refused",
                  # routine door reports (our own unlocks and their ends); the alarms a door
                  # raises (forced or held open, emergency release) are not batched
                  "door.unlocked", "door.locked", "door.opened", "door.closed")


def is_trace(kind: str) -> bool:
    return kind.startswith(TRACE_PREFIXES)


def already_logged(tx: Tx, event: Event) -> bool:
    """Whether this device event, by (device, boot id, evt seq), is in the log already: a
    captured event published again, or a redelivery after a restart (#14.9). Asked inside
    the transaction that would write it, so the check and the record are one."""
    if event.type not in DEVICE_EVENT_TYPES:
        return False
    boot_id, evt_seq = event.data.get("boot_id"), event.data.get("evt_seq")
    if not isinstance(boot_id, str) or not isinstance(evt_seq, int):
        return False
    return tx.execute("SELECT 1 FROM device_events WHERE device = ? AND boot_id = ? AND evt_seq = ?",
                      (event.subject, boot_id, evt_seq)).fetchone() is not None


_STOP = Event("device_log.stop", "", "", {})  # the queue's end marker, never written


class DeviceLogWriter:
    """Queues trace events and commits whatever has gathered in one transaction.

    A batch the store refuses (a full disk) is kept and tried again every `retry_s` with
    what arrives meanwhile, up to `max_held` events; beyond that the oldest are dropped with
    an error in the log, so a disk that stays full cannot grow memory without bound."""

    def __init__(self, store: Store, *, max_batch: int = 500, max_held: int = 100_000,
                 retry_s: float = 1.0, linger_s: float = 0.05) -> None:
        self.store = store
        self.max_batch = max_batch
        self.max_held = max_held
        self.retry_s = retry_s
        # how long the first report of a batch waits for others before the commit (ADR
        # 0121): at the week's pace reports came ~2 at a time, so nearly every one paid a
        # transaction, an fsync and a wake-up of its own
        self.linger_s = linger_s
        self._queue: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()  # ends a linger at once

    def submit(self, event: Event) -> None:
        self._queue.put(event)

    def start(self) -> DeviceLogWriter:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="device-log", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Write what is queued (one last try for anything the store refused), then end."""
        if self._thread is not None:
            self._stopping.set()
            self._queue.put(_STOP)
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        held: list[Event] = []
        stopping = False
        while not stopping:
            try:  # block for the first event, or wait retry_s when a refused batch is held
                first = self._queue.get(timeout=self.retry_s) if held else self._queue.get()
            except queue.Empty:
                first = None
            batch, limit = list(held), len(held) + self.max_batch
            for event in ([first] if first is not None else []):
                if event is _STOP:
                    stopping = True
                else:
                    batch.append(event)
            if batch and not stopping and self.linger_s > 0:
                # one wake-up per batch: the reports that come meanwhile queue up without
                # waking this thread for each (a stop ends the wait)
                self._stopping.wait(self.linger_s)
            while not stopping and len(batch) < limit:
                try:
                    event = self._queue.get_nowait()
                except queue.Empty:
                    break
                if event is _STOP:
                    stopping = True
                else:
                    batch.append(event)
            held = self._write(batch)

    def _write(self, batch: list[Event]) -> list[Event]:
        """Commit `batch`; what could not be committed is returned, to be tried again."""
        if not batch:
            return []
        try:
            with self.store.transaction() as tx:
                for event in batch:
                    if not already_logged(tx, event):
                        tx.emit(event)
            return []
        except StoreError:  # a full disk must not stop the writer: the space may come back
            log.exception("could not log %d device reports; trying again", len(batch))
        except Exception:  # noqa: BLE001 - one report the store can never take must not
            return self._write_each(batch)  # hold back every report behind it for ever
        if len(batch) > self.max_held:
            log.error("dropping the %d oldest device reports: the store has refused them too long",
                      len(batch) - self.max_held)
            batch = batch[-self.max_held:]
        return batch

    def _write_each(self, batch: list[Event]) -> list[Event]:
        """One transaction per report: the one that fails for itself is dropped (with a line
        in the log), the others are written; a store error holds the rest for a retry."""
        for i, event in enumerate(batch):
            try:
                with self.store.transaction() as tx:
                    if not already_logged(tx, event):
                        tx.emit(event)
            except StoreError:
                return batch[i:]
            except Exception as exc:  # noqa: BLE001
                log.error("dropping a device report the store cannot take: %s %s: %s",
                          event.type, event.subject, type(exc).__name__)
        return []
