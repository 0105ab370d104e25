"""The simulated physical room: shelves with real parcels in them, doors that count their
openings, LEDs that can die, and the SMS gateway that customers read their codes from.

The simulator's ledger of where each parcel physically is, is the ground truth the KPI
report checks the station against (parcels lost, wrong slots lit)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from firmware_stubs.hal import DoorHal, Led, ShelfHal


class DeadLed(Led):
    """An LED whose driver is broken: commands reach the firmware, nothing lights."""

    def show(self, colours: tuple[str, ...], pattern: str) -> None:
        self.colours, self.pattern = (), "solid"


class SimShelfHal(ShelfHal):
    """The stub shelf HAL plus the faults a real shelf has: dead LEDs, stuck sensors whose
    reading catches up with reality when they work again."""

    def kill_led(self, row: int, col: int) -> None:
        self._leds[(row, col)] = DeadLed()

    def stick(self, row: int, col: int) -> None:
        self.sensor(row, col).stuck = True

    def unstick(self, row: int, col: int, physical_count: int) -> None:
        sensor = self.sensor(row, col)
        sensor.stuck = False
        sensor.set_count(physical_count)


class SimDoorHal(DoorHal):
    """Counts every time the bolt is released by a command (not by the emergency input), so
    the report can compare door openings with the people who had a reason to come in."""

    def __init__(self) -> None:
        super().__init__()
        self.unlocks = 0
        self._count_lock = threading.Lock()

    def set_locked(self, locked: bool) -> None:
        if not locked and self.locked and not self.emergency:
            with self._count_lock:
                self.unlocks += 1
        super().set_locked(locked)


@dataclass
class PhysicalParcel:
    waybill: str
    phone: str
    size: str
    slot: str | None = None      # printed address while on a shelf
    holder: str | None = None    # who carries it (courier id / customer phone / "gone")
    came_from: str | None = None  # the slot it was last taken from
    unsensed: bool = False        # lifted while that slot's sensor was stuck (no station could see it)
    courier: str = ""             # who brought it in


@dataclass
class Room:
    """Ground truth: which parcel physically lies in which slot. Thread-safe."""

    parcels: dict[str, PhysicalParcel] = field(default_factory=dict)
    slots: dict[str, list[str]] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    # who holds what, kept beside `parcels`: every exit asks what its customer holds, and a
    # week's room has 100,000 parcels (walking them all at each exit made the run quadratic)
    _held: dict[str, set[str]] = field(default_factory=dict, repr=False)
    _wrong_hands: set[str] = field(default_factory=set, repr=False)

    def _hold(self, p: PhysicalParcel, holder: str | None) -> None:
        if p.holder is not None:
            self._held.get(p.holder, set()).discard(p.waybill)
        self._wrong_hands.discard(p.waybill)
        p.holder = holder
        if holder is not None:
            self._held.setdefault(holder, set()).add(p.waybill)
            if holder != p.phone:
                self._wrong_hands.add(p.waybill)

    def add(self, waybill: str, phone: str, size: str, holder: str) -> None:
        with self._lock:
            old = self.parcels.get(waybill)
            if old is not None:
                self._hold(old, None)
            self.parcels[waybill] = p = PhysicalParcel(waybill, phone, size, None, None, courier=holder)
            self._hold(p, holder)

    def place(self, waybill: str, slot: str) -> None:
        with self._lock:
            p = self.parcels[waybill]
            p.slot = slot
            self._hold(p, None)
            self.slots.setdefault(slot, []).append(waybill)

    def remove(self, waybill: str, holder: str) -> str | None:
        with self._lock:
            p = self.parcels[waybill]
            slot = p.slot
            if slot is not None:
                self.slots[slot].remove(waybill)
            p.slot = None
            self._hold(p, holder)
            if slot is not None:
                p.came_from = slot
            return slot

    def held_by(self, holder: str) -> list[str]:
        """The parcels in `holder`'s hands (off the shelves)."""
        with self._lock:
            return list(self._held.get(holder, ()))

    def in_wrong_hands(self) -> list[PhysicalParcel]:
        """Parcels off the shelves in the hands of somebody other than their recipient."""
        with self._lock:
            return [self.parcels[w] for w in self._wrong_hands]

    def lift(self, waybill: str, holder: str) -> str | None:
        """Take `waybill` off its shelf into `holder`'s hands, only if it lies on a shelf
        now (another hand may have been quicker); returns the slot, or None."""
        with self._lock:
            if self.parcels[waybill].slot is None:
                return None
            return self.remove(waybill, holder)

    def in_slot(self, slot: str) -> list[str]:
        with self._lock:
            return list(self.slots.get(slot, []))

    def count(self, slot: str) -> int:
        with self._lock:
            return len(self.slots.get(slot, []))

    def owner(self, waybill: str) -> str:
        return self.parcels[waybill].phone

    def on_shelves(self) -> dict[str, str]:
        """waybill -> slot for every parcel physically on a shelf (walks the slots, not the
        parcels: a week's run has 100,000 parcels but a station a few hundred slots)."""
        with self._lock:
            return {w: slot for slot, ws in self.slots.items() for w in ws}


class SmsInbox:
    """The SMS gateway stand-in (the station's webhook sender posts here): customers learn
    their pickup codes and one-time codes only from these messages."""

    KEEP = 200  # messages kept in arrival order for the inbox page

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._messages: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._order: list[dict[str, Any]] = []
        self._ids: set[Any] = set()
        self._cond = threading.Condition()
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the station's sender reuses its connection
            disable_nagle_algorithm = True  # headers and body go as two writes: no 40 ms stall

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                try:
                    msg = json.loads(body)
                except ValueError:
                    msg = {}
                inbox.deliver(msg)
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        # a thread per connection, and connections kept alive: a new connection (and a
        # thread) per message cost more than the message
        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}/sms"
        self._thread = threading.Thread(target=self.server.serve_forever, name="sms-inbox", daemon=True)
        self._thread.start()

    def deliver(self, msg: dict[str, Any]) -> None:
        """Keep one copy per outbox id: the station delivers at least once."""
        with self._cond:
            if msg.get("id") is not None and msg["id"] in self._ids:
                return
            self._ids.add(msg.get("id"))
            key = (str(msg.get("to")), str(msg.get("kind")))
            self._messages.setdefault(key, []).append(msg)
            self._order.append(msg)
            del self._order[:-self.KEEP]
            self._cond.notify_all()

    def all_messages(self) -> list[dict[str, Any]]:
        """The last KEEP messages, oldest first (the demo's inbox page)."""
        with self._cond:
            return list(self._order)

    def messages_for(self, phone: str, kind: str) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._messages.get((phone, kind), []))

    def wait_for(self, phone: str, kind: str, count: int, timeout: float) -> list[dict[str, Any]] | None:
        """At least `count` messages of `kind` for `phone`, or None after `timeout` s."""
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self._messages.get((phone, kind), [])) >= count, timeout)
        return self.messages_for(phone, kind) if ok else None

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
