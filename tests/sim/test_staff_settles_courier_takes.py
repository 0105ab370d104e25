"""The simulated operator, called to a held exit, settles a take whose parcel is back in the
hands of the courier who brought it (a placement the shelf would not confirm, taken back
and given up), and leaves open a take whose parcel a customer holds that is not theirs.

Before, a courier's given-up parcel counted as in the wrong hands: its takes stayed open,
every exit in the room stayed held, and the customers inside gave up one after another
(the week slice with the station and the simulator on separate CPUs, 2026-12-02)."""

from __future__ import annotations

import json
import threading

import httpx

from shelf_sim.kpi import Metrics
from shelf_sim.people import Env
from shelf_sim.world import Room


def test_staff_settle_what_a_courier_took_back_and_not_what_a_customer_holds() -> None:
    room = Room()
    room.add("SF1", "13800000001", "S", "sim-c1")      # brought by courier sim-c1
    room.place("SF1", "1-1-01")
    room.add("SF2", "13800000002", "S", "sim-c2")
    room.place("SF2", "1-1-02")
    assert room.lift("SF1", "sim-c1") == "1-1-01"        # the courier takes it back
    assert room.lift("SF2", "13800000003") == "1-1-02"   # a customer takes another's parcel
    resolved: list[str] = []

    def operator(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path == "/api/operator/takes":
            return httpx.Response(200, json=[{"seq": 11, "slot": "1-1-01"}, {"seq": 12, "slot": "1-1-02"}])
        assert request.method == "POST" and request.url.path.endswith("/resolve"), request.url
        resolved.append(request.url.path.split("/")[-2])
        assert json.loads(request.content)["note"]
        return httpx.Response(200, json={})

    metrics = Metrics()
    env = Env(base_url="http://station", kiosk_token="k", operator_token="o", stranger_kiosk_token="s",
              room=room, sms=None, hals={}, slots={}, metrics=metrics,  # type: ignore[arg-type]
              speed=100_000.0, stop=threading.Event())
    env.client = lambda: httpx.Client(base_url=env.base_url,  # type: ignore[method-assign]
                                      transport=httpx.MockTransport(operator))
    assert env.call_staff() == 1
    assert resolved == ["11"]
    assert metrics.counts["staff_settled_takes"] == 1
