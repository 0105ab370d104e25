from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from station.notify import ConsoleSender, Notification, StationInfo, render_text
from station.notify.messages import gateway_body

from .helpers import PHONE, pickup

STATION = StationInfo("Riverside Parcel Room", "12 Riverside Road", "Asia/Shanghai")


def test_pickup_text_is_bilingual_with_code_qr_place_and_local_deadline() -> None:
    text = render_text(pickup(7), STATION)
    assert "取件码 1-2-03-48210007" in text and "Pickup code 1-2-03-48210007" in text
    assert "PS1:st-test:1020348210007" in text
    assert "Riverside Parcel Room" in text and "12 Riverside Road, Hangzhou" in text
    # 10:00 UTC is 18:00 in Shanghai: people read their own clock
    assert "请于 2026-12-01 18:00 前取件" in text and "collect by 2026-12-01 18:00" in text
    assert "0007" in text


def test_otp_text_states_digits_and_life() -> None:
    n = Notification.one_time_code(phone=PHONE, otp="042917", ttl_s=300)
    text = render_text(n, STATION)
    assert "验证码 042917" in text and "5分钟" in text
    assert "one-time code is 042917" in text and "5 min" in text


def test_gateway_body_has_the_fields_an_sms_gateway_expects() -> None:
    body = gateway_body("row1", pickup(1), STATION)
    assert {"to", "text", "code", "qr", "station", "address", "deadline"} <= set(body)
    assert body["to"] == PHONE and body["code"] == "1-2-03-48210001"
    assert body["id"] == "row1" and body["deadline"] == "2026-12-01T10:00:00Z"


def test_phone_is_normalised_and_bad_phone_refused() -> None:
    n = Notification.parse({"kind": "otp", "phone": "+86 138-1234-5678", "otp": "123456",
                            "ttl_s": 60})
    assert n.phone == PHONE and n.phone_masked == "138****5678"
    with pytest.raises(ValidationError):
        Notification.parse({"kind": "otp", "phone": "12345", "otp": "123456", "ttl_s": 60})


@pytest.mark.parametrize("bad", [
    {"kind": "otp", "phone": PHONE, "otp": "12345", "ttl_s": 60},  # 5 digits
    {"kind": "otp", "phone": PHONE, "ttl_s": 60},  # no code
    {"kind": "otp", "phone": PHONE, "otp": "123456", "ttl_s": 60, "code": "1-1-01-1"},
    {"kind": "pickup_code", "phone": PHONE, "code": "x", "qr": "y", "station_name": "s"},
    {"kind": "alert"},
    {"kind": "sms", "text": "hi"},
])
def test_each_kind_gets_exactly_its_fields(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Notification.parse(bad)


def test_console_shows_masked_phone_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="station.notify")
    ConsoleSender(STATION).send("row1", pickup(3))
    ConsoleSender(STATION).send("row2", Notification.one_time_code(phone=PHONE, otp="111222",
                                                                    ttl_s=60))
    assert len(caplog.records) == 2
    assert all("138****5678" in r.getMessage() for r in caplog.records)
    assert all(PHONE not in r.getMessage() for r in caplog.records)
