"""Typed domain errors: each carries a stable `code` the API turns into a JSON error body."""

from __future__ import annotations


class DomainError(Exception):
    code = "domain_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidSlotAddress(DomainError):
    code = "invalid_slot_address"


class InvalidPickupCode(DomainError):
    code = "invalid_pickup_code"


class InvalidPhone(DomainError):
    code = "invalid_phone"


class UnknownCarrier(DomainError):
    code = "unknown_carrier"


class StationFull(DomainError):
    code = "station_full"


class SlotFull(DomainError):
    code = "slot_full"


class IllegalTransition(DomainError):
    code = "illegal_transition"

    def __init__(self, parcel_id: str, state: str, event: str) -> None:
        super().__init__(f"parcel {parcel_id}: cannot {event} when {state}")
        self.parcel_id = parcel_id
        self.state = state
        self.event = event


class LockedOut(DomainError):
    code = "locked_out"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
