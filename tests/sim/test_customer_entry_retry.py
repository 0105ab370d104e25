"""A simulated customer the kiosk asks to wait (every colour in use) or answers with a
server error tries again with the same code from their SMS. The refusal's error code once
took the SMS's variable name, so the second try crashed the customer (a `TypeError` in the
week slice, found when faster acks made the room fill up)."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest

from shelf_sim.kpi import Metrics
from shelf_sim.people import Customer, Env
from shelf_sim.scenario import CustomerPlan
from shelf_sim.world import Room

PHONE = "13800001234"
CODE = "1-2-03-4821-77"


class Inbox:
    """The SMS the customer got: one pickup code."""

    def wait_for(self, phone: str, kind: str, count: int, timeout: float) -> list[dict[str, Any]]:
        return self.messages_for(phone, kind)

    def messages_for(self, phone: str, kind: str) -> list[dict[str, Any]]:
        return [{"to": phone, "kind": kind, "code": CODE, "qr": "PS1:x"}]


@pytest.mark.parametrize("refusal", [(409, "room_busy"), (503, "door_failed")])
def test_a_refused_entry_is_tried_again_with_the_same_code(refusal: tuple[int, str]) -> None:
    typed: list[str] = []
    entry = {"session_id": "pks_1", "colour": "#FF0000", "slots": ["1-2-03"], "held_s": 0.0}

    def kiosk(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/kiosk/code"
        typed.append(json.loads(request.content)["code"])
        if len(typed) == 1:
            return httpx.Response(refusal[0], json={"error": refusal[1], "message": "wait"})
        return httpx.Response(200, json=entry)

    metrics = Metrics()
    env = Env(base_url="http://station", kiosk_token="k", operator_token="o", stranger_kiosk_token="s",
              room=Room(), sms=Inbox(), hals={}, slots={}, metrics=metrics,  # type: ignore[arg-type]
              speed=100_000.0, stop=threading.Event())
    plan = CustomerPlan(index=0, phone=PHONE, waybills=("SF0000000000001",), method="code",
                        arrival_delay_s=0.0, walk_s=5.0, exit_frame=False, wrong_slot_take=False,
                        foreign_parcel=False, walk_off=False)
    customer = Customer(env, plan, list(plan.waybills), 0, lambda p, v: None)
    with httpx.Client(base_url=env.base_url, transport=httpx.MockTransport(kiosk)) as http:
        assert customer._enter(http) == entry
    assert typed == [CODE, CODE]
    counted = "entry_waits_room_busy" if refusal[1] == "room_busy" else "entry_retry:door_failed"
    assert metrics.counts[counted] == 1
