"""The demo's hands-on room: a page where a newcomer is the hand and the eye in the room.

It shows every slot as the simulated shelves' LEDs show it, lets a click put a parcel into a
slot or take one out (driving the simulated placement sensor, exactly as a hand would: the
firmware senses it, debounces it and reports it, signed, to the station), shows the SMS
inbox (the pickup codes and one-time codes the station sent), and holds a label under the
exit's document camera (the real exit API, with the exit kiosk's token).

It is part of the simulator, not of the station: `station run` has no such routes and cannot
get them (station/ never imports shelf_sim/); only `shelf-sim demo` mounts this router on the
station's app. Nothing here is a station API: the routes sit under /demo, outside /api."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from station.api.pages import SECURITY_HEADERS
from station.domain.layout import SlotAddress

from .world import SmsInbox

STATIC = Path(__file__).parent / "static"


class ExitShow(BaseModel):
    waybills: list[str] = Field(min_length=1, max_length=20)


class HandsOnRoom:
    """What the page reads and drives: the shelves' HALs, the SMS inbox, the exit kiosk."""

    def __init__(self, config: Any, hals: dict[str, Any], sms: SmsInbox, exit_token: str,
                 parcels_in: Any) -> None:
        self.config = config
        self.hals = hals
        self.sms = sms
        self.exit_token = exit_token
        # slot -> waybills of the parcels the station has in it (what a person would read
        # on the labels in front of them)
        self.parcels_in = parcels_in
        self.held: list[str] = []

    def _sensor(self, slot: str) -> Any:
        try:
            addr = SlotAddress.parse(slot)
        except Exception:  # noqa: BLE001 - an address the room has not: 404 below
            addr = None
        shelf = next((s for s in self.config.shelves if addr and s.number == addr.shelf), None)
        if shelf is None or shelf.device not in self.hals or addr is None \
                or not (1 <= addr.row <= shelf.rows and 1 <= addr.col <= shelf.columns):
            raise HTTPException(404, f"no slot {slot!r} in this room")
        return self.hals[shelf.device].sensor(addr.row, addr.col)

    def room(self) -> dict[str, Any]:
        shelves = []
        for shelf in self.config.shelves:
            hal = self.hals.get(shelf.device)
            if hal is None:
                continue
            slots = []
            for row, col in hal.slots():
                led = hal.led(row, col)
                slots.append({"slot": f"{shelf.number}-{row}-{col:02d}", "row": row, "col": col,
                              "count": hal.sensor(row, col).read(), "colours": list(led.colours),
                              "pattern": led.pattern})
            shelves.append({"number": shelf.number, "device": shelf.device, "rows": shelf.rows,
                            "columns": shelf.columns, "outbound": shelf.outbound, "slots": slots})
        return {"shelves": shelves, "held": list(self.held)}

    def put(self, slot: str) -> dict[str, Any]:
        self._sensor(slot).put()
        return {"slot": slot, "count": self._sensor(slot).read()}

    def take(self, slot: str) -> dict[str, Any]:
        sensor = self._sensor(slot)
        if sensor.read() == 0:
            raise HTTPException(409, f"slot {slot} is empty: there is nothing to take")
        labels = [w for w in self.parcels_in(slot) if w not in self.held]
        sensor.take()
        if labels:
            self.held.append(labels[0])
        return {"slot": slot, "count": sensor.read(), "label": labels[0] if labels else None}

    def inbox(self) -> list[dict[str, Any]]:
        msgs = self.sms.all_messages()
        keep = ("to", "kind", "code", "text", "deadline")
        return [{k: m[k] for k in keep if k in m} for m in reversed(msgs)]


def install(app: FastAPI, room: HandsOnRoom) -> None:
    router = APIRouter(prefix="/demo", include_in_schema=False)

    @router.get("/room")
    def room_page() -> HTMLResponse:
        return HTMLResponse((STATIC / "room.html").read_text(encoding="utf-8"), headers=SECURITY_HEADERS)

    @router.get("/api/room")
    def room_state() -> dict[str, Any]:
        return room.room()

    @router.post("/api/room/{slot}/put")
    def put(slot: str) -> dict[str, Any]:
        return room.put(slot)

    @router.post("/api/room/{slot}/take")
    def take(slot: str) -> dict[str, Any]:
        return room.take(slot)

    @router.get("/api/sms")
    def sms() -> dict[str, Any]:
        return {"messages": room.inbox()}

    @router.get("/api/exit-token")
    def exit_token() -> dict[str, str]:
        """The exit kiosk's token, for the page's document camera (demo only)."""
        return {"token": room.exit_token}

    @router.post("/api/exit/shown")
    def shown(body: ExitShow) -> dict[str, Any]:
        """The labels left the person's hands through the exit (after the station let them)."""
        room.held = [w for w in room.held if w not in body.waybills]
        return {"held": room.held}

    app.include_router(router)
    app.mount("/demo/static", StaticFiles(directory=STATIC), name="demo-static")
