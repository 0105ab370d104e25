"""Device reports that are a trace, not a fact the station acts on (command outcomes, bad
messages), written in batches by a thread of their own.

Under load the link's one network thread spent a third of its time committing one
`command.acked` per transaction, and every ack behind it waited: the acks that HTTP
requests wait for. Placements, availability and door events are not batched: they change
state or raise alarms, and are committed before the broker hears they arrived (ADR 0018)."""

from __future__ import annotations

import logging
import queue
import threading

from station.store.db import Store
from station.store.eventlog import Event

log = logging.getLogger("station.device_log")

# kinds that only record what a device said about a command or a message
TRACE_PREFIXES = ("command.", "device.bad_message", "device.command_refused",
                  # routine door reports (our own unlocks and their ends); the alarms a door
                  # raises (forced or held open, emergency release) are not batched
                  "door.unlocked", "door.locked", "door.opened", "door.closed")


def is_trace(kind: str) -> bool:
    return kind.startswith(TRACE_PREFIXES)


class DeviceLogWriter:
    """Queues trace events and commits whatever has gathered in one transaction."""

    def __init__(self, store: Store, *, max_batch: int = 500) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()

    def submit(self, event: Event) -> None:
        self._idle.clear()
        self._queue.put(event)

    def start(self) -> DeviceLogWriter:
        self._thread = threading.Thread(target=self._run, name="device-log", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Write what is queued, then end."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted so far is committed (tests, shutdown)."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        done = False
        while not done:
            first = self._queue.get()
            batch: list[Event] = []
            if first is None:
                done = True
            else:
                batch.append(first)
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    done = True
                    break
                batch.append(more)
            self._write(batch)
            if self._queue.empty():
                self._idle.set()

    def _write(self, batch: list[Event]) -> None:
        if not batch:
            return
        try:
            with self.store.transaction() as tx:
                for event in batch:
                    tx.emit(event)
        except Exception:  # a full disk must not stop the writer: the next batch may fit
            log.exception("could not log %d device reports", len(batch))


