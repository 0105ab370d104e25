"""Request bodies: validated at the edge, unknown fields refused."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CourierLogin(_Body):
    courier_id: str = Field(min_length=1, max_length=32)
    pin: str = Field(min_length=1, max_length=16)


class CourierPinEntry(CourierLogin):
    pass


class OpenShelving(_Body):
    mode: Literal["guided", "free"] | None = None


class Scan(_Body):
    waybill: str = Field(min_length=1, max_length=64)
    phone: str = Field(min_length=1, max_length=32)
    size: Literal["S", "M", "L", "XL"] = "S"
    # the carrier's pre-advice (ADR 0154): the recipient needs a slot within reach (true),
    # no longer does (false: clears only a flag this carrier's pre-advice set), or unsaid
    needs_reachable_slot: bool | None = None


class ReachableFlag(_Body):
    """An operator sets or clears a recipient's "needs a reachable slot" flag by number; the
    number is hashed at once and never stored or logged (ADR 0154)."""

    phone: str = Field(min_length=1, max_length=32)
    needs_reachable_slot: bool


class ConfirmSlot(_Body):
    """The courier's answer to "is this parcel in slot X?": X (yes) or null (no, it is not)."""

    slot: str | None = Field(max_length=16)


class CodeEntry(_Body):
    code: str = Field(min_length=1, max_length=64)


class QrEntry(_Body):
    payload: str = Field(min_length=1, max_length=512)


class ExtendEntry(_Body):
    """A typed pickup code or a QR payload read by the kiosk: one of the two."""

    code: str | None = Field(default=None, min_length=1, max_length=64)
    payload: str | None = Field(default=None, min_length=1, max_length=512)

    @model_validator(mode="after")
    def _one(self) -> ExtendEntry:
        if (self.code is None) == (self.payload is None):
            raise ValueError("give either code or payload")
        return self


class KioskReport(_Body):
    slot: str = Field(pattern=r"^\d{1,3}-\d{1,3}-\d{1,3}$")
    problem: Literal["slot_empty", "not_mine", "damaged"]
    # damaged: the refused parcel's waybill, when the kiosk read it (two of the customer's
    # parcels in one slot: which one)
    waybill: str | None = Field(default=None, min_length=1, max_length=64)
    # the kiosk camera's snapshot reference (its hash), when it took one
    snapshot: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class ExtendBy(_Body):
    seconds: float = Field(gt=0, le=30 * 86400)


class OtpRequest(_Body):
    phone: str = Field(min_length=1, max_length=32)


class OtpEntry(_Body):
    phone: str = Field(min_length=1, max_length=32)
    otp: str = Field(min_length=1, max_length=12)


class DropOff(_Body):
    send_code: str = Field(min_length=1, max_length=64)
    size: Literal["S", "M", "L", "XL"] = "M"


class ExitWaybills(_Body):
    waybills: list[str] = Field(min_length=1, max_length=20)


class ExitLeave(_Body):
    session_id: str | None = Field(default=None, max_length=64)


class TakeResolution(_Body):
    note: str = Field(default="", max_length=200)


class NewCourier(_Body):
    courier_id: str = Field(min_length=1, max_length=32)
    carrier: str = Field(min_length=1, max_length=32)
    name: str = Field(min_length=1, max_length=64)
    pin: str = Field(min_length=4, max_length=8)
    valid_from: float | None = None
    valid_until: float | None = None


class NewPin(_Body):
    pin: str = Field(min_length=4, max_length=8)


class PlacementReport(_Body):
    """For operators and tests without a shelf controller: what a sensor would say."""

    device: str = Field(min_length=1, max_length=64)
    row: int = Field(ge=1, le=9)
    col: int = Field(ge=1, le=99)
    action: Literal["put", "take"]


class ErrorBody(BaseModel):
    """Every refusal: a stable code for programs and a sentence for people."""

    error: str
    message: str
    retry_after_s: float | None = None


def _err(description: str) -> dict[str, object]:
    return {"model": ErrorBody, "description": description}


# The refusals every authenticated route can give, documented once for all routers.
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    401: _err("no token, a bad token, or a wrong code/PIN/one-time code"),
    403: _err("the token's role may not use this route"),
    404: _err("no such session, courier, parcel or snapshot"),
    409: _err("refused in the current state (duplicate waybill, session closed ...)"),
    413: _err("a body larger than the route takes (64 KiB of JSON; 8 MiB for an image)"),
    422: _err("the request is not valid"),
    429: _err("locked out after too many wrong attempts (retry_after_s)"),
    503: _err("a door or camera is offline or did not answer"),
    507: _err("the station's disk is full; no new work is taken"),
}


class OperatorLogin(_Body):
    operator_id: str = Field(min_length=1, max_length=32)
    password: str = Field(min_length=1, max_length=256)


class KioskPairing(_Body):
    code: str = Field(min_length=1, max_length=32)


class RevokeAll(_Body):
    operator_id: str | None = Field(default=None, max_length=32)
