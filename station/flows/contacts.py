"""Recipient phone numbers, sealed, kept only while the recipient has parcels here.

The event log and projections know a recipient by keyed hash and masked number; the number
itself is needed only to send messages, so it lives sealed in a side table and is deleted
when nothing of theirs is left at the station."""

from __future__ import annotations

from station.crypto import Sealer
from station.store.db import Tx


def save(sealer: Sealer, tx: Tx, recipient_hash: str, phone: str) -> None:
    tx.execute(
        "INSERT INTO recipient_contacts(recipient_hash, phone_sealed, updated_at) VALUES (?,?,?)"
        " ON CONFLICT(recipient_hash) DO UPDATE SET phone_sealed = excluded.phone_sealed,"
        " updated_at = excluded.updated_at",
        (recipient_hash, sealer.seal(phone.encode(), recipient_hash), tx.now),
    )


def phone_of(sealer: Sealer, tx: Tx, recipient_hash: str) -> str | None:
    row = tx.execute(
        "SELECT phone_sealed FROM recipient_contacts WHERE recipient_hash = ?", (recipient_hash,)
    ).fetchone()
    if row is None:
        return None
    return sealer.open(row[0], recipient_hash).decode()


def forget_if_done(tx: Tx, recipient_hash: str) -> None:
    left = tx.execute(
        "SELECT 1 FROM parcels WHERE recipient_hash = ? AND state IN ('shelved','expired','recalled')"
        " UNION SELECT 1 FROM pending_placements WHERE recipient_hash = ?"
        " AND state IN ('waiting', 'unverified')",
        (recipient_hash, recipient_hash),
    ).fetchone()
    if left is None:
        tx.execute("DELETE FROM recipient_contacts WHERE recipient_hash = ?", (recipient_hash,))
