"""A courier whose parcel left the slot before their retry (its recipient took it, the
station having bound it meanwhile), and whose handheld then says "shelved" after all, does
not put it back: it is in the recipient's hands, not the courier's. Before, the give-up's
last look put it back in the slot from wherever it was, and the week of 2026-12-02 ended
with a parcel the station had handed out lying on the shelf (parcels_lost 1)."""

from __future__ import annotations

import threading

import httpx

from shelf_sim.kpi import Metrics
from shelf_sim.people import Courier, Env, SlotInfo
from shelf_sim.scenario import CourierPlan, ParcelPlan
from shelf_sim.world import Room, SimShelfHal

WAYBILL, OWNER = "JDEFF25322789774", "16600006031"


def _courier(room: Room, metrics: Metrics) -> Courier:
    env = Env(base_url="http://station", kiosk_token="k", operator_token="o", stranger_kiosk_token="s",
              room=room, sms=None, hals={"shelf-2": SimShelfHal(5, 10)},  # type: ignore[arg-type]
              slots={a: SlotInfo(a, "shelf-2", 1, int(a[-2:]), "M", 2, False) for a in ("2-1-04", "2-1-05")},
              metrics=metrics,
              speed=100_000.0, stop=threading.Event())
    courier = Courier(env, CourierPlan(0, "sim-c1", "JD", "guided"), [], lambda p, ok: None)
    courier.session = {"session_id": "shs_1"}
    return courier


def _handheld(request: httpx.Request) -> httpx.Response:
    assert request.url.path == "/api/courier/sessions/shs_1/items/pnd_1"
    return httpx.Response(200, json={"state": "bound", "parcel_id": "pcl_1", "slot": "2-1-05"})


def test_a_parcel_its_recipient_took_is_not_put_back_by_the_courier() -> None:
    room = Room()
    room.add(WAYBILL, OWNER, "S", "sim-c1")
    room.place(WAYBILL, "2-1-05")
    assert room.lift(WAYBILL, OWNER) == "2-1-05"          # the recipient was quicker
    metrics = Metrics()
    courier = _courier(room, metrics)
    parcel = ParcelPlan(WAYBILL, OWNER, "S", 0, 2.0, 0.5, False)
    with httpx.Client(base_url="http://station", transport=httpx.MockTransport(_handheld)) as http:
        assert courier._give_up(http, parcel, {"pending_id": "pnd_1"}, "2-1-05") is True
    assert room.held_by(OWNER) == [WAYBILL] and room.parcels[WAYBILL].slot is None
    assert metrics.counts["courier_late_confirmations"] == 1


def test_a_parcel_still_in_the_couriers_hands_goes_back_where_the_handheld_says() -> None:
    room = Room()
    room.add(WAYBILL, OWNER, "S", "sim-c1")
    room.place(WAYBILL, "2-1-04")
    assert room.lift(WAYBILL, "sim-c1") == "2-1-04"       # taken out for the retry
    courier = _courier(room, Metrics())
    parcel = ParcelPlan(WAYBILL, OWNER, "S", 0, 2.0, 0.5, False)
    with httpx.Client(base_url="http://station", transport=httpx.MockTransport(_handheld)) as http:
        assert courier._give_up(http, parcel, {"pending_id": "pnd_1"}, "2-1-04") is True
    assert room.parcels[WAYBILL].slot == "2-1-05" and room.held_by("sim-c1") == []
