"""The parcel lifecycle as an explicit state machine.

Inbound:  shelved -> picked_up | expired | recalled | missing
          expired | recalled -> returned;  missing -> shelved (found again)
          shelved -> refused (the customer refused it at the kiosk, #19.4) -> returned | missing
Outbound: dropped_off -> collected | outbound_missing;  outbound_missing -> dropped_off
(two missing states, so a parcel found again goes back to the direction it came from)
"""

from __future__ import annotations

from enum import StrEnum

from .errors import IllegalTransition


class ParcelState(StrEnum):
    SHELVED = "shelved"
    PICKED_UP = "picked_up"
    EXPIRED = "expired"
    RECALLED = "recalled"
    RETURNED = "returned"
    MISSING = "missing"
    OUTBOUND_MISSING = "outbound_missing"
    DROPPED_OFF = "dropped_off"
    COLLECTED = "collected"
    REFUSED = "refused"


class ParcelAction(StrEnum):
    PICK_UP = "pick_up"
    EXPIRE = "expire"
    RECALL = "recall"
    RETURN = "return"
    MARK_MISSING = "mark_missing"
    FOUND = "found"
    COLLECT = "collect"
    REFUSE = "refuse"


S, A = ParcelState, ParcelAction
TRANSITIONS: dict[tuple[ParcelState, ParcelAction], ParcelState] = {
    (S.SHELVED, A.PICK_UP): S.PICKED_UP,
    (S.SHELVED, A.EXPIRE): S.EXPIRED,
    (S.SHELVED, A.RECALL): S.RECALLED,
    (S.SHELVED, A.MARK_MISSING): S.MISSING,
    (S.EXPIRED, A.RETURN): S.RETURNED,
    (S.RECALLED, A.RETURN): S.RETURNED,
    (S.EXPIRED, A.MARK_MISSING): S.MISSING,
    (S.RECALLED, A.MARK_MISSING): S.MISSING,
    (S.MISSING, A.FOUND): S.SHELVED,
    (S.DROPPED_OFF, A.COLLECT): S.COLLECTED,
    (S.DROPPED_OFF, A.MARK_MISSING): S.OUTBOUND_MISSING,
    (S.OUTBOUND_MISSING, A.FOUND): S.DROPPED_OFF,
    (S.SHELVED, A.REFUSE): S.REFUSED,
    (S.REFUSED, A.RETURN): S.RETURNED,
    (S.REFUSED, A.MARK_MISSING): S.MISSING,
}

# States in which a parcel occupies its slot.
ON_SHELF = frozenset({S.SHELVED, S.EXPIRED, S.RECALLED, S.DROPPED_OFF, S.REFUSED})
# States whose codes open the door.
WAITING = frozenset({S.SHELVED})


def transition(parcel_id: str, state: ParcelState | str, action: ParcelAction | str) -> ParcelState:
    try:
        key = (ParcelState(state), ParcelAction(action))
    except ValueError:
        raise IllegalTransition(parcel_id, str(state), str(action)) from None
    try:
        return TRANSITIONS[key]
    except KeyError:
        raise IllegalTransition(parcel_id, key[0].value, key[1].value) from None
