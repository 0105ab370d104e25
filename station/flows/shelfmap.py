"""The operator's view of the room — every slot's occupancy and light, the doors, the
devices — computed from a store, so the live map and a replayed instant are one function."""

from __future__ import annotations

import dataclasses
from typing import Any

from station.store.db import Store

from .context import Ctx
from .holdings import held_by_slot
from .lights import LightSync

DOOR_EVENTS = ("door.opened", "door.closed", "door.unlocked", "door.locked", "door.forced_open",
               "door.held_open", "door.emergency_release", "command.acked")


def room_state(ctx: Ctx, store: Store | None = None, now: float | None = None) -> dict[str, Any]:
    view_ctx = ctx if store is None else dataclasses.replace(ctx, store=store)
    store = view_ctx.store
    now = ctx.clock() if now is None else now
    lights = LightSync(view_ctx).desired(now)
    occupancy = held_by_slot(store)
    shelves = []
    for shelf in ctx.layout.shelves:
        slots = []
        dev_lights = lights.get(shelf.device, {})
        for row in range(1, shelf.rows + 1):
            for col in range(1, shelf.columns + 1):
                addr = f"{shelf.number}-{row}-{col:02d}"
                spec = dev_lights.get((row, col))
                slots.append({
                    "slot": addr, "row": row, "col": col, "size": shelf.row_sizes[row - 1],
                    "capacity": shelf.capacity, "parcels": occupancy.get(addr, 0),
                    "light": None if spec is None else {"colours": list(spec.colours), "pattern": spec.pattern},
                })
        shelves.append({"number": shelf.number, "device": shelf.device, "rows": shelf.rows,
                        "columns": shelf.columns, "outbound": shelf.outbound, "slots": slots})
    doors = {}
    for door in (ctx.config.doors.entry, ctx.config.doors.exit):
        last = store.query_one(
            "SELECT type, ts FROM events WHERE subject = ? AND type LIKE 'door.%'"
            " AND type != 'door.unlock.requested' ORDER BY seq DESC LIMIT 1", (door,))
        doors[door] = {"last": last["type"] if last else None, "at": last["ts"] if last else None}
    devices = {r["id"]: {"online": bool(r["online"]), "boot_id": r["boot_id"]}
               for r in store.query("SELECT * FROM devices")}
    for dev in ctx.config.device_ids:
        devices.setdefault(dev, {"online": False, "boot_id": None})
    alarms = [dict(r) for r in store.query(
        "SELECT * FROM alarms WHERE acknowledged_at IS NULL ORDER BY raised_at DESC LIMIT 50")]
    sessions = [dict(r) for r in store.query(
        "SELECT id, kind, actor, colour, opened_at, expires_at FROM sessions WHERE state = 'open'")]
    return {"station": ctx.station_id, "seq": store.last_seq, "shelves": shelves, "doors": doors,
            "devices": devices, "alarms": alarms, "sessions": sessions}
