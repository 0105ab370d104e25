"""Courier routes: log in, open a shelving session, scan, follow placements, return runs."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool

from station.flows.errors import FlowError, Unavailable

from .auth import Principal, make_token, require
from .images import MAX_IMAGE_BYTES, read_image
from .models import ConfirmSlot, CourierLogin, OpenShelving, Scan
from .services import Services, services

router = APIRouter(prefix="/api/courier", tags=["courier"])
courier_only = require("courier")
COURIER_TOKEN_TTL_S = 10 * 3600
MAX_WAIT_S = 10.0  # a long poll holds a worker thread: bounded, and a handheld asks again


@router.post("/login", summary="Exchange courier id + PIN for a courier token",
             responses={401: {"description": "wrong courier id or PIN"},
                        429: {"description": "locked out after too many wrong PINs"}})
def login(body: CourierLogin, request: Request, svc: Services = Depends(services)) -> dict[str, Any]:
    courier = svc.core.couriers.check_pin(body.courier_id, body.pin, scope="courier-screen")
    token = make_token(request.app.state.token_key, "courier", courier.id, COURIER_TOKEN_TTL_S)
    return {"token": token, "courier": asdict(courier)}


@router.get("/me")
def me(who: Principal = Depends(courier_only), svc: Services = Depends(services)) -> dict[str, Any]:
    return asdict(svc.core.couriers.get(who.subject))


@router.post("/sessions", summary="Open a shelving session")
def open_session(body: OpenShelving, who: Principal = Depends(courier_only),
                 svc: Services = Depends(services)) -> dict[str, Any]:
    return svc.core.shelving.open_session(who.subject, body.mode)


@router.get("/sessions/{session_id}")
def get_session(session_id: str, who: Principal = Depends(courier_only),
                svc: Services = Depends(services)) -> dict[str, Any]:
    return svc.core.shelving.session(session_id, who.subject)


@router.get("/sessions/{session_id}/items/{pending_id}",
            summary="One scanned parcel; with wait_s, answers when it is shelved, failed or "
                    "waits for the courier to confirm its slot")
def get_item(session_id: str, pending_id: str,
             wait_s: float = Query(0.0, ge=0.0, le=MAX_WAIT_S,
                                   description="wait up to this many seconds for the parcel to "
                                               "leave the waiting state (long poll)"),
             who: Principal = Depends(courier_only), svc: Services = Depends(services)) -> dict[str, Any]:
    return svc.core.shelving.item(session_id, pending_id, who.subject, wait_s)


@router.post("/sessions/{session_id}/items/{pending_id}/confirm",
             summary="Answer the handheld's question: is this parcel in the slot it names?",
             responses={409: {"description": "nothing waits for a confirmation (already "
                                             "placed, taken out again, timed out)"},
                        422: {"description": "not the slot the handheld asked about"}})
def confirm_item(session_id: str, pending_id: str, body: ConfirmSlot,
                 who: Principal = Depends(courier_only),
                 svc: Services = Depends(services)) -> dict[str, Any]:
    """A put the station could not attribute for certain (another courier's slot lit beside
    it, a put beside the lit slot, a sensor that disagreed with the records) is held as
    `unverified`: no parcel, no pickup code, until the courier says yes (`slot`) or no
    (null: the scan waits again and the put becomes an alarm). docs/adr/0095."""
    return svc.core.shelving.confirm(session_id, pending_id, body.slot, who.subject)


@router.post("/sessions/{session_id}/scans", summary="Scan (or type) a waybill")
def scan(session_id: str, body: Scan, who: Principal = Depends(courier_only),
         svc: Services = Depends(services)) -> dict[str, Any]:
    return asdict(svc.core.shelving.scan(session_id, body.waybill, body.phone, body.size, who.subject,
                                         needs_reachable_slot=body.needs_reachable_slot))


@router.post("/sessions/{session_id}/scan-frame", summary="Decode waybills from a camera frame",
             max_body_size=MAX_IMAGE_BYTES)
async def scan_frame(session_id: str, request: Request, who: Principal = Depends(courier_only),
                     svc: Services = Depends(services)) -> dict[str, Any]:
    if svc.decode_codes is None:
        raise Unavailable("no code reader is configured", code="vision_unavailable")
    image = await read_image(request)
    texts = await run_in_threadpool(svc.decode_codes, image)
    waybills = [t for t in texts if svc.core.ctx.carriers.is_waybill(t)]
    if not waybills:
        raise FlowError("no waybill of a known carrier was read", code="nothing_read", status=422)
    return {"waybills": waybills}


@router.post("/sessions/{session_id}/close")
def close_session(session_id: str, who: Principal = Depends(courier_only),
                  svc: Services = Depends(services)) -> dict[str, Any]:
    svc.core.shelving.close_session(session_id, who.subject)
    return {"session_id": session_id, "state": "closed"}


@router.post("/returns", summary="Start a return run: light this carrier's expired and recalled parcels")
def return_run(who: Principal = Depends(courier_only), svc: Services = Depends(services)) -> dict[str, Any]:
    return svc.core.returns.start_return_run(who.subject)


@router.post("/collections", summary="Start a collection run for dropped-off outbound parcels")
def collection_run(who: Principal = Depends(courier_only), svc: Services = Depends(services)) -> dict[str, Any]:
    return svc.core.returns.start_collection_run(who.subject)


@router.post("/runs/{session_id}/close")
def close_run(session_id: str, who: Principal = Depends(courier_only),
              svc: Services = Depends(services)) -> dict[str, Any]:
    svc.core.returns.close_run(session_id, who.subject)
    return {"session_id": session_id, "state": "closed"}
