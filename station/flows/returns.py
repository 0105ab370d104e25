"""Expiry and return runs (inbound parcels going back to the carrier) and outbound parcels
(a customer drops off for sending; a courier collects)."""

from __future__ import annotations

from typing import Any

from station.domain.colours import PALETTE_HEX, allocate_colour
from station.domain.layout import SlotAddress
from station.domain.parcels import transition
from station.store.eventlog import Event

from .care import Care
from .context import Ctx, new_id
from .errors import FlowError, Unavailable
from .lights import LightSync
from .ports import outcome_of
from .shelving import Shelving

RUN_TTL_S = 900.0


class Returns:
    def __init__(self, ctx: Ctx, lights: LightSync, shelving: Shelving, couriers: Any) -> None:
        self.ctx = ctx
        self.lights = lights
        self.shelving = shelving
        self.couriers = couriers
        self.care = Care(ctx)

    def expire_due(self, now: float) -> int:
        rows = self.ctx.store.query(
            "SELECT id, recipient_hash FROM parcels WHERE state = 'shelved' AND deadline <= ?", (now,))
        expired = 0
        if rows:
            with self.ctx.lock, self.ctx.store.transaction() as tx:
                for r in rows:
                    # decided on a read before the lock: a parcel picked up since stays so
                    if not tx.execute("SELECT 1 FROM parcels WHERE id = ? AND state = 'shelved'",
                                      (r["id"],)).fetchone():
                        continue
                    transition(r["id"], "shelved", "expire")
                    tx.emit(Event("parcel.expired", r["id"], "station", {"parcel_id": r["id"]}))
                    self.care.on_expired(tx, r["id"])
                    expired += 1
            self.lights.refresh()
        return expired

    def recall(self, parcel_id: str, actor: str = "operator") -> None:
        with self.ctx.lock, self.ctx.store.transaction() as tx:
            row = tx.execute("SELECT state FROM parcels WHERE id = ?", (parcel_id,)).fetchone()
            if row is None:
                raise FlowError(f"no parcel {parcel_id}", code="not_found", status=404)
            transition(parcel_id, row[0], "recall")
            tx.emit(Event("parcel.recalled", parcel_id, actor, {"parcel_id": parcel_id}))

    def _run(self, courier_id: str, kind: str, states: tuple[str, ...]) -> dict[str, Any]:
        ctx = self.ctx
        courier = self.couriers.usable(courier_id, ctx.clock())
        with ctx.lock:
            marks = ",".join("?" * len(states))
            parcels = ctx.store.query(
                f"SELECT id, slot, waybill FROM parcels WHERE carrier = ? AND state IN ({marks})"
                " ORDER BY slot", (courier.carrier, *states))
            with ctx.store.transaction() as tx:
                session_id = new_id("rts")
                colour = self._free_colour()
                tx.emit(Event("return.opened", session_id, courier_id, {
                    "session_id": session_id, "courier_id": courier_id, "colour": colour,
                    "mode": kind, "parcels": [p["id"] for p in parcels],
                    "expires_at": tx.now + RUN_TTL_S}))
            handles = self.lights.refresh()
        for h in handles:
            outcome_of(h, ctx.command_timeout)
        return {"session_id": session_id, "colour": colour,
                "parcels": [{"parcel_id": p["id"], "slot": p["slot"], "waybill": p["waybill"]} for p in parcels]}

    def start_return_run(self, courier_id: str) -> dict[str, Any]:
        return self._run(courier_id, "return", ("expired", "recalled", "refused"))

    def start_collection_run(self, courier_id: str) -> dict[str, Any]:
        return self._run(courier_id, "collect", ("dropped_off",))

    def close_run(self, session_id: str, actor: str = "courier") -> None:
        with self.ctx.lock, self.ctx.store.transaction() as tx:
            row = tx.execute("SELECT state FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if row and row[0] == "open":
                tx.emit(Event("return.closed", session_id, actor, {"session_id": session_id, "reason": "done"}))
        self.lights.refresh()

    def on_take(self, slot: SlotAddress) -> bool:
        """A take at a slot lit for a return or collection run records one parcel as gone."""
        ctx = self.ctx
        import json

        for s in ctx.store.query("SELECT id, actor, mode, parcels FROM sessions"
                                 " WHERE state = 'open' AND kind = 'return'"):
            ids = json.loads(s["parcels"])
            if not ids:
                continue
            marks = ",".join("?" * len(ids))
            p = ctx.store.query_one(
                f"SELECT id, state FROM parcels WHERE id IN ({marks}) AND slot = ?"
                " AND state IN ('expired','recalled','refused','dropped_off') ORDER BY id LIMIT 1",
                (*ids, str(slot)))
            if p is None:
                continue
            with ctx.store.transaction() as tx:
                if p["state"] == "dropped_off":
                    transition(p["id"], p["state"], "collect")
                    tx.emit(Event("parcel.collected", p["id"], s["actor"],
                                  {"parcel_id": p["id"], "courier_id": s["actor"]}))
                else:
                    transition(p["id"], p["state"], "return")
                    tx.emit(Event("parcel.returned", p["id"], s["actor"],
                                  {"parcel_id": p["id"], "courier_id": s["actor"]}))
            return True
        return False

    # --- outbound ------------------------------------------------------------------------------

    def start_dropoff(self, send_code: str, size: str, kiosk: str = "kiosk") -> dict[str, Any]:
        """A customer drops off a parcel for sending with the carrier's send code."""
        ctx = self.ctx
        carrier = ctx.carriers.carrier_of_send_code(send_code)
        send_code = send_code.strip()
        with ctx.lock:
            if ctx.store.query_one("SELECT 1 FROM parcels WHERE waybill = ?", (send_code,)) or \
               ctx.store.query_one("SELECT 1 FROM pending_placements WHERE waybill = ? AND state='waiting'",
                                   (send_code,)):
                raise FlowError("this send code was already used", code="duplicate_waybill")
            # the reserve is counted and taken in the transaction that opens the session, under
            # the lock: a burst of drop-offs cannot all see a free place (ADR 0076)
            with ctx.store.transaction() as tx:
                open_now = tx.execute("SELECT COUNT(*) FROM sessions WHERE kind = 'dropoff'"
                                      " AND state = 'open'").fetchone()[0]
                if open_now >= ctx.config.station.dropoff_max_colours:
                    raise Unavailable("Another drop-off is in progress. Please wait a minute and try "
                                      "again.", code="dropoff_busy")
                slot = self.shelving._choose(size, "", outbound=True)
                session_id = new_id("dos")
                colour = self._free_colour()
                deadline = tx.now + ctx.config.station.placement_timeout_s
                tx.emit(Event("dropoff.opened", session_id, kiosk, {
                    "session_id": session_id, "colour": colour, "mode": "guided",
                    "expires_at": deadline}))
                pending_id = new_id("pnd")
                tx.emit(Event("parcel.scanned", send_code, kiosk, {
                    "pending_id": pending_id, "session_id": session_id, "waybill": send_code,
                    "carrier": carrier.name, "size": size, "recipient_hash": "",
                    "phone_masked": "", "target_slot": str(slot), "deadline": deadline}))
            handles = self.lights.refresh(self.lights.devices_of([slot]))
        for h in handles:
            outcome_of(h, ctx.command_timeout)
        return {"session_id": session_id, "pending_id": pending_id, "slot": str(slot),
                "colour": colour, "carrier": carrier.name}

    def _free_colour(self) -> str:
        """A colour nobody inside has: drop-offs and return runs never share one (a customer
        would see their colour on a slot that is not theirs); they wait instead."""
        in_use = self.lights.colours_in_use()
        if set(PALETTE_HEX) <= set(in_use):
            raise Unavailable("Every colour is in use by people inside; please try again in a "
                              "minute.", code="room_busy")
        return allocate_colour(in_use)

    def on_outbound_put(self, slot: SlotAddress) -> str | None:
        ctx = self.ctx
        row = ctx.store.query_one(
            "SELECT p.* FROM pending_placements p JOIN sessions s ON s.id = p.session_id"
            " WHERE p.state = 'waiting' AND s.kind = 'dropoff' AND p.target_slot = ?"
            " ORDER BY p.created_at LIMIT 1", (str(slot),))
        if row is None:
            return None
        parcel_id = new_id("pcl")
        with ctx.store.transaction() as tx:
            tx.emit(Event("parcel.dropped_off", parcel_id, "customer", {
                "parcel_id": parcel_id, "pending_id": row["id"], "waybill": row["waybill"],
                "carrier": row["carrier"], "size": row["size"], "slot": str(slot)}))
            tx.emit(Event("dropoff.closed", row["session_id"], "customer",
                          {"session_id": row["session_id"], "reason": "placed"}))
        return parcel_id
