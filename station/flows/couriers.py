"""The courier registry: carriers' staff who may enter and shelve.

PINs are argon2 hashes, sealed wherever they are stored or logged (flows/pins.py, ADR 0082);
face templates are encrypted side rows removed with the courier."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from station.crypto import DecryptError
from station.store.db import Tx
from station.store.eventlog import Event

from . import guard
from .context import Ctx
from .errors import AuthFailed, FlowError, NotFound
from .pins import PinSeal, exposed

_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_PIN = re.compile(r"^\d{4,8}$")
# the owner of the hash an unknown courier id is checked against: not a valid courier id
_NOBODY = "\0no-courier"


@dataclass(frozen=True)
class CourierView:
    id: str
    carrier: str
    name: str
    active: bool
    has_face: bool
    valid_from: float | None
    valid_until: float | None
    # the current PIN's hash is in the event log in clear (set before ADR 0082): change it
    pin_exposed: bool = False
    # "local" (this station's CLI or API) or "fleet" (a courier bundle, ADR 0131)
    source: str = "local"


def _view(row: dict[str, Any]) -> CourierView:
    return CourierView(row["id"], row["carrier"], row["name"], bool(row["active"]),
                       bool(row["has_face"]), row["valid_from"], row["valid_until"],
                       exposed(row["pin_hash"]), row.get("source") or "local")


class Couriers:
    def __init__(self, ctx: Ctx, hasher: PasswordHasher | None = None) -> None:
        self.ctx = ctx
        # modest argon2 cost: a PIN check must not stall an edge box, and the lockout, not
        # the hash cost, is what limits online guessing
        self.hasher = hasher or PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
        self.seal = PinSeal(ctx.secrets.encryption_key)
        # what an unknown courier id is verified against: sealed like a real one and hashed
        # with the same parameters (once, here, so that no request pays for hashing it)
        self._dummy = self.seal.seal(_NOBODY, self.hasher.hash("no courier has this pin"))

    def add(self, courier_id: str, carrier: str, name: str, pin: str, *, actor: str = "operator",
            valid_from: float | None = None, valid_until: float | None = None) -> CourierView:
        if not _ID.match(courier_id or ""):
            raise FlowError("courier id: 1-32 letters, digits, - or _", code="invalid_courier_id", status=422)
        if carrier not in self.ctx.carriers.names:
            raise FlowError(f"unknown carrier {carrier!r}", code="unknown_carrier", status=422)
        _check_pin_format(pin)
        if not name or len(name) > 64:
            raise FlowError("a name is 1-64 characters", code="invalid_name", status=422)
        sealed = self.seal.seal(courier_id, self.hasher.hash(pin))
        with self.ctx.lock, self.ctx.store.transaction() as tx:
            if tx.execute("SELECT 1 FROM couriers WHERE id = ?", (courier_id,)).fetchone():
                raise FlowError(f"courier {courier_id} exists", code="courier_exists")
            tx.emit(Event("courier.added", courier_id, actor, {
                "courier_id": courier_id, "carrier": carrier, "name": name, "pin": "set",
                "pin_sealed": sealed, "valid_from": valid_from, "valid_until": valid_until}))
        return self.get(courier_id)

    def _local_only(self, courier_id: str, what: str) -> None:
        """A fleet courier's PIN and existence belong to the fleet (ADR 0131); the station may
        only disable one (a hold no bundle lifts) and enable it again."""
        if self.get(courier_id).source == "fleet":
            raise FlowError(f"courier {courier_id} comes from the fleet: {what} it there (this station may"
                            " disable them)", code="fleet_courier", status=409)

    def change_pin(self, courier_id: str, pin: str, *, actor: str = "operator") -> CourierView:
        """A new PIN; the event says that it changed and carries only its sealed hash."""
        self._local_only(courier_id, "change the PIN of")
        _check_pin_format(pin)
        sealed = self.seal.seal(courier_id, self.hasher.hash(pin))
        with self.ctx.lock, self.ctx.store.transaction() as tx:
            if not tx.execute("SELECT 1 FROM couriers WHERE id = ?", (courier_id,)).fetchone():
                raise NotFound(f"no courier {courier_id}")
            tx.emit(Event("courier.pin.changed", courier_id, actor, {
                "courier_id": courier_id, "pin": "changed", "pin_sealed": sealed}))
        return self.get(courier_id)

    def get(self, courier_id: str) -> CourierView:
        row = self.ctx.store.query_one("SELECT * FROM couriers WHERE id = ?", (courier_id,))
        if row is None:
            raise NotFound(f"no courier {courier_id}")
        return _view(row)

    def all(self) -> list[CourierView]:
        return [_view(r) for r in self.ctx.store.query("SELECT * FROM couriers ORDER BY id")]

    def set_active(self, courier_id: str, active: bool, *, actor: str = "operator") -> CourierView:
        with self.ctx.lock, self.ctx.store.transaction() as tx:
            _must_exist(tx, courier_id)
            kind = "courier.enabled" if active else "courier.disabled"
            tx.emit(Event(kind, courier_id, actor, {"courier_id": courier_id}))
        return self.get(courier_id)

    def remove(self, courier_id: str, *, actor: str = "operator") -> None:
        """Removing a courier deletes their face templates in the same transaction."""
        self._local_only(courier_id, "remove")
        with self.ctx.lock, self.ctx.store.transaction() as tx:
            _must_exist(tx, courier_id)  # checked where it is acted on: removed once
            n = tx.execute("DELETE FROM face_templates WHERE courier_id = ?", (courier_id,)).rowcount
            tx.emit(Event("courier.removed", courier_id, actor,
                          {"courier_id": courier_id, "face_templates_deleted": n}))

    def store_templates(self, courier_id: str, blobs: Sequence[bytes], *, actor: str = "operator",
                        distances: Sequence[float] = ()) -> None:
        self._local_only(courier_id, "enrol the face of")
        with self.ctx.lock, self.ctx.store.transaction() as tx:
            _must_exist(tx, courier_id)  # not templates for a courier removed a moment ago
            tx.execute("DELETE FROM face_templates WHERE courier_id = ?", (courier_id,))
            for idx, blob in enumerate(blobs):
                tx.execute("INSERT INTO face_templates(courier_id, idx, blob) VALUES (?,?,?)",
                           (courier_id, idx, blob))
            tx.emit(Event("courier.face.enrolled", courier_id, actor,
                          {"courier_id": courier_id, "templates": len(blobs)}))

    def templates(self) -> list[tuple[str, bytes]]:
        rows = self.ctx.store.query(
            "SELECT t.courier_id, t.blob FROM face_templates t JOIN couriers c ON c.id = t.courier_id"
            " WHERE c.active = 1 ORDER BY t.courier_id, t.idx")
        return [(r["courier_id"], r["blob"]) for r in rows]

    def usable(self, courier_id: str, now: float) -> CourierView:
        c = self.get(courier_id)
        if not c.active:
            raise AuthFailed(f"courier {courier_id} is disabled", code="courier_disabled", status=403)
        if (c.valid_from and now < c.valid_from) or (c.valid_until and now > c.valid_until):
            raise AuthFailed(f"courier {courier_id} is outside their validity dates",
                             code="courier_expired", status=403)
        return c

    def check_pin(self, courier_id: str, pin: str, *, scope: str = "kiosk") -> CourierView:
        """Wrong PINs are locked out like pickup codes (per courier id and station-wide).

        The guess is admitted and counted before the PIN is tested; an unknown courier id
        costs what a wrong PIN costs (one argon2 verify, against a hash of the same
        parameters, and one counted failure), so the answer's timing does not say which
        ids exist."""
        lock_scope = f"courier:{courier_id}"
        attempt = guard.admit(self.ctx, "pin", lock_scope, scope, {"courier_id": courier_id})
        row = self.ctx.store.query_one("SELECT pin_hash FROM couriers WHERE id = ?", (courier_id,))
        if row is not None:
            ok = self._verify(courier_id, row["pin_hash"], pin)
        else:  # the same work as a wrong PIN, and the same answer
            self._verify(_NOBODY, self._dummy, pin)
            ok = False
        with self.ctx.lock, self.ctx.store.transaction() as tx:
            if not ok:
                guard.reject(self.ctx, tx, attempt, scope, {"courier_id": courier_id})
            else:
                guard.accept(tx, attempt, scope, {"courier_id": courier_id})
        if not ok:
            raise AuthFailed("wrong courier id or PIN", code="wrong_pin")
        return self.usable(courier_id, self.ctx.clock())

    def _verify(self, owner: str, stored: str, pin: object) -> bool:
        try:
            return bool(self.hasher.verify(self.seal.open(owner, stored), pin if isinstance(pin, str) else ""))
        except (VerificationError, InvalidHashError, DecryptError):
            return False


def _must_exist(tx: Tx, courier_id: str) -> None:
    if not tx.execute("SELECT 1 FROM couriers WHERE id = ?", (courier_id,)).fetchone():
        raise NotFound(f"no courier {courier_id}")


def _check_pin_format(pin: str) -> None:
    if not isinstance(pin, str) or not _PIN.match(pin):
        raise FlowError("a PIN is 4-8 digits", code="invalid_pin", status=422)
