"""What the station tells people: the notification model and its bilingual text.

Flows hand the outbox a `Notification` (or the same thing as a dict); the outbox keeps it
encrypted and the senders render it. Rendering lives here, not in each sender, so the SMS
gateway, the MQTT consumer and the console all say the same words.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from station.domain.errors import InvalidPhone
from station.domain.phones import mask_phone, normalise_phone
from station.store.eventlog import parse_utc

Kind = Literal["pickup_code", "otp", "alert", "reminder", "expired", "carrier_return", "picked_up"]

# Fields each kind must carry; anything else stays None so an OTP never drags a code along.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "pickup_code": ("phone", "code", "qr", "station_name", "deadline_iso"),
    "otp": ("phone", "otp", "ttl_s"),
    "alert": ("text",),
    "reminder": ("phone", "station_name", "deadline_iso"),
    "expired": ("phone", "station_name"),
    "carrier_return": ("carrier", "waybill", "station_name"),
    "picked_up": ("phone", "station_name", "count", "at_iso"),
}
_ALLOWED: dict[str, frozenset[str]] = {
    "pickup_code": frozenset(
        {"phone", "code", "qr", "station_name", "address", "deadline_iso", "waybill_tail"}
    ),
    "otp": frozenset({"phone", "otp", "ttl_s"}),
    "alert": frozenset({"text"}),
    # customer care (#19): none of these carries a code, the station keeps only its digest
    "reminder": frozenset({"phone", "station_name", "address", "deadline_iso", "waybill_tail"}),
    "expired": frozenset({"phone", "station_name", "address", "waybill_tail"}),
    "carrier_return": frozenset({"carrier", "waybill", "station_name", "address", "at_iso"}),
    "picked_up": frozenset({"phone", "station_name", "count", "at_iso"}),
}
_FIELDS = frozenset().union(*_ALLOWED.values())


class Notification(BaseModel):
    """One message to one person (or to the operators, for `alert`).

    A single flat model with a `kind` rather than a union: callers build it from a dict in
    one line and the outbox stores it as one JSON object; the validator enforces which
    fields each kind needs and refuses the ones it must not carry.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Kind
    phone: str | None = None
    # pickup_code
    code: str | None = None
    qr: str | None = None
    station_name: str | None = None
    address: str = ""
    deadline_iso: str | None = None
    waybill_tail: str = ""
    # otp
    otp: str | None = None
    ttl_s: int | None = Field(default=None, gt=0, le=86400)
    # alert
    text: str | None = None
    # carrier_return: the carrier is told the whole waybill (its own record, nothing personal)
    carrier: str | None = None
    waybill: str | None = None
    # picked_up
    count: int | None = Field(default=None, gt=0, le=1000)
    at_iso: str | None = None

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return normalise_phone(value)
        except InvalidPhone as exc:  # pydantic reports only ValueErrors as field errors
            raise ValueError(exc.message) from None

    @field_validator("otp")
    @classmethod
    def _otp(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"\d{6}", value):
            raise ValueError("a one-time code is 6 digits")
        return value

    @field_validator("deadline_iso", "at_iso")
    @classmethod
    def _deadline(cls, value: str | None) -> str | None:
        if value is not None:
            _parse_iso(value)
        return value

    @model_validator(mode="after")
    def _fields_match_kind(self) -> Notification:
        for name in _REQUIRED[self.kind]:
            if getattr(self, name) in (None, ""):
                raise ValueError(f"a {self.kind} notification needs {name}")
        for name in _FIELDS - _ALLOWED[self.kind]:
            default = type(self).model_fields[name].default
            if getattr(self, name) != default:
                raise ValueError(f"a {self.kind} notification does not carry {name}")
        return self

    # --- constructors the flows use -------------------------------------------------------

    @classmethod
    def pickup_code(
        cls, *, phone: str, code: str, qr: str, station_name: str, address: str,
        deadline_iso: str, waybill_tail: str = "",
    ) -> Notification:
        return cls(
            kind="pickup_code", phone=phone, code=code, qr=qr, station_name=station_name,
            address=address, deadline_iso=deadline_iso, waybill_tail=waybill_tail,
        )

    @classmethod
    def one_time_code(cls, *, phone: str, otp: str, ttl_s: int) -> Notification:
        return cls(kind="otp", phone=phone, otp=otp, ttl_s=ttl_s)

    @classmethod
    def alert(cls, text: str) -> Notification:
        return cls(kind="alert", text=text)

    @classmethod
    def parse(cls, message: Notification | Mapping[str, Any]) -> Notification:
        if isinstance(message, Notification):
            return message
        return cls.model_validate(dict(message))

    # --- derived --------------------------------------------------------------------------

    @property
    def phone_masked(self) -> str:
        """The only form of the number that may appear in logs and events."""
        return mask_phone(self.phone) if self.phone else ""


@dataclass(frozen=True)
class StationInfo:
    """Who is speaking: fills in the station for kinds that do not carry it (OTP, alert)
    and the time zone in which deadlines are shown to people."""

    name: str
    address: str = ""
    timezone: str = "Asia/Shanghai"

    def tz(self) -> tzinfo:
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            return UTC


def _parse_iso(text: str) -> datetime:
    return datetime.fromtimestamp(parse_utc(text), UTC)


def local_deadline(deadline_iso: str, station: StationInfo) -> str:
    """People read deadlines in the station's local time, minutes precision."""
    return _parse_iso(deadline_iso).astimezone(station.tz()).strftime("%Y-%m-%d %H:%M")


def render_text(n: Notification, station: StationInfo) -> str:
    """The message body, Chinese first then English, as an SMS gateway would send it."""
    if n.kind == "pickup_code":
        name = n.station_name or station.name
        address = n.address or station.address
        deadline = local_deadline(n.deadline_iso or "", station)
        tail_cn = f"(运单尾号{n.waybill_tail})" if n.waybill_tail else ""
        tail_en = f" (waybill ...{n.waybill_tail})" if n.waybill_tail else ""
        where_cn = f"{name}，地址：{address}" if address else name
        where_en = f"{name}, {address}" if address else name
        return (
            f"【{name}】您的包裹{tail_cn}已到{where_cn}。取件码 {n.code}，"
            f"请于 {deadline} 前取件。扫码取件：{n.qr} / "
            f"Your parcel{tail_en} is at {where_en}. Pickup code {n.code}; "
            f"collect by {deadline}. QR: {n.qr}"
        )
    if n.kind == "reminder":
        name = n.station_name or station.name
        deadline = local_deadline(n.deadline_iso or "", station)
        tail_cn = f"(运单尾号{n.waybill_tail})" if n.waybill_tail else ""
        tail_en = f" (waybill ...{n.waybill_tail})" if n.waybill_tail else ""
        return (
            f"【{name}】提醒：您的包裹{tail_cn}仍在{name}，请于 {deadline} 前取件，逾期将退回快递公司。"
            f"取件码丢失可在自助机用手机验证码取件。 / Reminder: your parcel{tail_en} is waiting at "
            f"{name}; collect it by {deadline} or it goes back to the carrier. Lost the code? "
            f"Use a one-time code at the kiosk."
        )
    if n.kind == "expired":
        name = n.station_name or station.name
        tail_cn = f"(运单尾号{n.waybill_tail})" if n.waybill_tail else ""
        tail_en = f" (waybill ...{n.waybill_tail})" if n.waybill_tail else ""
        return (
            f"【{name}】您的包裹{tail_cn}已超过取件期限，将退回快递公司。 / Your parcel{tail_en} "
            f"was not collected in time and goes back to the carrier."
        )
    if n.kind == "carrier_return":
        name = n.station_name or station.name
        return (
            f"【{name}】退件：{n.carrier} 运单 {n.waybill} 逾期未取，请取回。 / Return: {n.carrier} "
            f"waybill {n.waybill} was not collected at {name}; please take it back."
        )
    if n.kind == "picked_up":
        name = n.station_name or station.name
        at = local_deadline(n.at_iso or "", station)
        return (
            f"【{name}】您的{n.count}件包裹已于 {at} 取走。如非本人操作，请联系站点。 / "
            f"{n.count} parcel(s) of yours left {name} at {at}. If that was not you, contact the station."
        )
    if n.kind == "otp":
        minutes = max(1, round((n.ttl_s or 0) / 60))
        return (
            f"【{station.name}】验证码 {n.otp}，{minutes}分钟内有效，请勿告诉他人。 / "
            f"Your {station.name} one-time code is {n.otp}, valid for {minutes} min. "
            f"Do not share it."
        )
    return f"【{station.name}】告警 / Alert: {n.text}"


def gateway_body(outbox_id: str, n: Notification, station: StationInfo) -> dict[str, Any]:
    """The JSON an SMS gateway (webhook) or an MQTT consumer receives.

    `id` is the outbox row id: delivery is at least once, so a receiver de-duplicates on it.
    """
    body: dict[str, Any] = {
        "id": outbox_id,
        "kind": n.kind,
        "to": n.phone,
        "text": render_text(n, station),
        "code": None,
        "qr": None,
        "station": n.station_name or station.name,
        "address": n.address or station.address,
        "deadline": None,
    }
    if n.kind == "pickup_code":
        body.update(code=n.code, qr=n.qr, deadline=n.deadline_iso)
    elif n.kind == "otp":
        body.update(code=n.otp, ttl_s=n.ttl_s)
    elif n.kind == "reminder":
        body.update(deadline=n.deadline_iso)
    elif n.kind == "carrier_return":
        body.update(carrier=n.carrier, waybill=n.waybill)
    elif n.kind == "picked_up":
        body.update(count=n.count, at=n.at_iso)
    return body


WITHHELD = "(withheld)"


def summary_line(outbox_id: str, n: Notification, station: StationInfo, *,
                 show_codes: bool = False) -> str:
    """One line for a log: the number masked, never whole; the code or one-time code only
    when `show_codes` (the demo's stand-in for an SMS, ADR 0081), since a code copied from a
    log opens the door."""
    if n.kind == "pickup_code":
        deadline = local_deadline(n.deadline_iso or "", station)
        return (
            f"notify {outbox_id} pickup_code to {n.phone_masked}: code "
            f"{n.code if show_codes else WITHHELD} at {n.station_name or station.name}, "
            f"collect by {deadline}"
        )
    if n.kind == "otp":
        return (f"notify {outbox_id} otp to {n.phone_masked}: {n.otp if show_codes else WITHHELD}"
                f" valid {n.ttl_s} s")
    if n.kind == "alert":
        return f"notify {outbox_id} alert: {n.text}"
    if n.kind == "carrier_return":
        return f"notify {outbox_id} carrier_return to {n.carrier}: waybill {n.waybill}"
    extra = f" count {n.count}" if n.count else ""
    return f"notify {outbox_id} {n.kind} to {n.phone_masked}{extra}"
