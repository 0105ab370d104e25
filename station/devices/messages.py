"""Pydantic models of what devices send, validated at the edge before anything trusts it.

The same shapes are written as JSON Schema in docs/asyncapi.yaml; tests/contract holds the two
together by validating real traffic against the document.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .envelope import REFUSAL_REASONS

Id = Annotated[str, Field(min_length=1, max_length=64)]
Sig = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Colour = Annotated[str, Field(pattern=r"^#[0-9A-Fa-f]{6}$")]
Row = Annotated[int, Field(ge=1, le=99)]
Reason = Literal[REFUSAL_REASONS]  # type: ignore[valid-type]

EVENT_KINDS = (
    "placement",
    "door.unlocked",
    "door.locked",
    "door.opened",
    "door.closed",
    "door.held_open",
    "door.forced_open",
    "door.emergency_release",
    "door.emergency_reset",
    "command.refused",
)


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class AckMsg(_Msg):
    v: Literal[1]
    t: Literal["ack"]
    msg_id: Id
    cmd_id: Annotated[str, Field(max_length=64)]  # "" when the command was unreadable
    device: Id
    ok: bool
    seq: Annotated[int, Field(ge=0)]
    boot_id: Id
    ts: float | None
    result: dict[str, Any]
    reason: Reason | None = None
    sig: Sig


class PlacementData(_Msg):
    row: Row
    col: Row
    action: Literal["put", "take"]
    count: Annotated[int, Field(ge=0)]
    occupied: bool


class RefusedData(_Msg):
    cmd_id: Annotated[str, Field(max_length=64)]
    op: Annotated[str, Field(max_length=64)]
    seq: Annotated[int, Field(ge=0)]
    reason: Reason
    detail: Annotated[str, Field(max_length=200)]


DATA_MODELS: dict[str, type[_Msg]] = {"placement": PlacementData, "command.refused": RefusedData}


class EvtMsg(_Msg):
    v: Literal[1]
    t: Literal["evt"]
    msg_id: Id
    device: Id
    boot_id: Id
    evt_seq: Annotated[int, Field(ge=1)]
    ts: float | None
    uptime_s: float
    kind: Literal[EVENT_KINDS]  # type: ignore[valid-type]
    data: dict[str, Any]
    sig: Sig


class TimeInfo(_Msg):
    trusted: bool
    nonce: Annotated[str, Field(min_length=8, max_length=64)] | None


class LitSlot(_Msg):
    row: Row
    col: Row
    colours: Annotated[list[Colour], Field(min_length=1, max_length=4)]
    pattern: Literal["solid", "blink", "alternate"]
    ttl_left_s: Annotated[float, Field(ge=0)]


class OccupiedSlot(_Msg):
    row: Row
    col: Row
    count: Annotated[int, Field(ge=1)]


class _StateBase(_Msg):
    v: Literal[1]
    t: Literal["state"]
    device: Id
    boot_id: Id
    ts: float | None
    uptime_s: float
    last_seq: Annotated[int, Field(ge=0)]
    time: TimeInfo
    sig: Sig


class ShelfState(_StateBase):
    kind: Literal["shelf"]
    rows: Row
    cols: Row
    lights: list[LitSlot]
    occupied: list[OccupiedSlot]


class DoorState(_StateBase):
    kind: Literal["door"]
    locked: bool
    open: bool
    emergency: bool
    held_open_alarm: bool
    relock_in_s: Annotated[float, Field(ge=0)] | None


def parse_state(obj: dict[str, Any]) -> ShelfState | DoorState:
    """A state snapshot of either kind; raises pydantic.ValidationError."""
    if obj.get("kind") == "door":
        return DoorState.model_validate(obj)
    return ShelfState.model_validate(obj)


def parse_event(obj: dict[str, Any]) -> EvtMsg:
    """An event with its kind-specific data checked where we know the shape."""
    evt = EvtMsg.model_validate(obj)
    model = DATA_MODELS.get(evt.kind)
    if model is not None:
        model.model_validate(evt.data)
    return evt
