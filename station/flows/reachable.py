"""Recipients who need a slot within reach (#19.5, ADR 0154): a flag on the keyed hash of
their number, set by an operator or by a carrier's pre-advice on the courier's scan.

The number is typed in and hashed at once (domain/phones.py); the flag's row and its events
hold only the hash and the masked form, never the number. Each change is one transaction
with its event (`recipient.reachable.set` / `.cleared`); asking again for what already holds
changes nothing and writes nothing.

Who may clear a flag: an operator, any flag; a carrier's pre-advice, only the flag that
carrier's own pre-advice set (a carrier's system that says "no need" by default must not undo
an operator's decision or another carrier's advice)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from station.domain.assignment import reachable_slots
from station.domain.layout import SlotAddress
from station.domain.phones import mask_phone, phone_hash
from station.store.db import Tx
from station.store.eventlog import Event

from .context import Ctx

OPERATOR = "operator"
PRE_ADVICE = "pre-advice"


@dataclass(frozen=True)
class FlagChange:
    """What a request did: `needs` is the flag afterwards; `changed` whether it moved."""

    phone_masked: str
    needs: bool
    changed: bool
    source: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"phone_masked": self.phone_masked, "needs_reachable_slot": self.needs,
                "changed": self.changed, "source": self.source}


class Reachable:
    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        # fixed by the configuration: computed once
        self.slots: frozenset[SlotAddress] = reachable_slots(ctx.layout, ctx.config.care.reachable_rows)

    @property
    def configured(self) -> bool:
        return bool(self.slots)

    def is_flagged(self, recipient_hash: str) -> bool:
        return self.ctx.store.query_one(
            "SELECT 1 FROM recipient_flags WHERE recipient_hash = ?", (recipient_hash,)) is not None

    def cleared_by(self, recipient_hash: str, carrier: str) -> bool:
        """Would this carrier's pre-advice "no need" clear the recipient's flag?"""
        return self.ctx.store.query_one(
            "SELECT 1 FROM recipient_flags WHERE recipient_hash = ? AND source = ? AND carrier = ?",
            (recipient_hash, PRE_ADVICE, carrier)) is not None

    def by_operator(self, phone: str, needs: bool, actor: str) -> FlagChange:
        """Set or clear the flag of the number `phone` (validated: InvalidPhone, a 422)."""
        recipient = phone_hash(phone, self.ctx.secrets.hash_key)
        masked = mask_phone(phone)
        with self.ctx.lock, self.ctx.store.transaction() as tx:
            return self.change(tx, recipient, masked, needs, OPERATOR, actor)

    def change(self, tx: Tx, recipient: str, masked: str, needs: bool, source: str, actor: str,
               carrier: str | None = None) -> FlagChange:
        """In the caller's transaction (the scan's, for a pre-advice): the flag's event, when
        it changes anything."""
        row = tx.execute("SELECT source, carrier FROM recipient_flags WHERE recipient_hash = ?",
                         (recipient,)).fetchone()
        data = {"recipient_hash": recipient, "phone_masked": masked, "source": source,
                "carrier": carrier}
        if needs:
            # an operator's flag stays the operator's: a pre-advice does not take it over
            if row is not None and (row[0] == OPERATOR or row[0] == source == PRE_ADVICE):
                return FlagChange(masked, True, False, row[0])
            tx.emit(Event("recipient.reachable.set", recipient, actor, data))
            return FlagChange(masked, True, True, source)
        if row is None:
            return FlagChange(masked, False, False)
        if source == PRE_ADVICE and (row[0] != PRE_ADVICE or row[1] != carrier):
            return FlagChange(masked, True, False, row[0])  # not this carrier's to clear
        tx.emit(Event("recipient.reachable.cleared", recipient, actor,
                      {**data, "was_source": row[0]}))
        return FlagChange(masked, False, True, source)

    def all(self) -> list[dict[str, Any]]:
        """The flags as the operator sees them: masked numbers, who set them and when."""
        return [dict(r) for r in self.ctx.store.query(
            "SELECT phone_masked, source, carrier, actor, set_at FROM recipient_flags"
            " ORDER BY set_at, phone_masked")]
