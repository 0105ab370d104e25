"""Kiosk and door routes (kiosk device role): customers in by code, QR or phone + one-time
code; couriers in by face or PIN; the exit check."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from station.domain.codes import QR_PREFIX, PickupCode, parse_qr_payload
from station.flows.errors import AuthFailed, FlowError, Unavailable
from station.flows.pickup import EntryResult
from station.flows.ports import outcome_of
from station.store.eventlog import Event

from .auth import Principal, require
from .images import MAX_FRAMES_BODY_BYTES, MAX_IMAGE_BYTES, read_frames_json, read_image
from .models import (
    CodeEntry,
    CourierPinEntry,
    DropOff,
    ExitLeave,
    ExitWaybills,
    ExtendEntry,
    KioskReport,
    OtpEntry,
    OtpRequest,
    QrEntry,
)
from .services import Services, services

log = logging.getLogger("station.api.kiosk")
router = APIRouter(prefix="/api/kiosk", tags=["kiosk"])
kiosk_only = require("kiosk")


def _entered(svc: Services, method: str, started: float, result: EntryResult) -> dict[str, Any]:
    """The answer, and the entry's latency for /metrics (the wait for a colour left out)."""
    svc.observe_entry(method, time.perf_counter() - started - result.held_s)
    return asdict(result)


@router.get("/settings", summary="How the kiosk screen starts a visit: large text, sound, speech")
def settings(who: Principal = Depends(kiosk_only), svc: Services = Depends(services)) -> dict[str, Any]:
    """The station's [kiosk] defaults (#19.5); the page asks once after pairing, so an
    operator changes them in the configuration, not on each screen."""
    return svc.core.ctx.config.kiosk.model_dump()


@router.post("/code", summary="Enter with a typed pickup code")
def enter_code(body: CodeEntry, who: Principal = Depends(kiosk_only),
               svc: Services = Depends(services)) -> dict[str, Any]:
    started = time.perf_counter()
    return _entered(svc, "code", started, svc.core.pickup.enter_with_code(body.code, who.subject))


@router.post("/qr", summary="Enter with the QR payload read by the kiosk")
def enter_qr(body: QrEntry, who: Principal = Depends(kiosk_only),
             svc: Services = Depends(services)) -> dict[str, Any]:
    started = time.perf_counter()
    return _entered(svc, "qr", started, svc.core.pickup.enter_with_qr(body.payload, who.subject))


@router.post("/qr-frame", summary="Enter with a QR held up to the kiosk camera (image body)",
             max_body_size=MAX_IMAGE_BYTES)
async def enter_qr_frame(request: Request, who: Principal = Depends(kiosk_only),
                         svc: Services = Depends(services)) -> dict[str, Any]:
    if svc.decode_codes is None:
        raise Unavailable("no code reader is configured", code="vision_unavailable")
    image = await read_image(request)
    texts = await run_in_threadpool(svc.decode_codes, image)
    payload = next((t for t in texts if t.startswith(QR_PREFIX + ":")), None)
    if payload is None:
        raise FlowError("no pickup QR code was found in the picture", code="nothing_read", status=422)
    started = time.perf_counter()
    result = await run_in_threadpool(svc.core.pickup.enter_with_qr, payload, who.subject)
    return _entered(svc, "qr", started, result)


@router.post("/otp/request", summary="Send a one-time code to a phone with a waiting parcel")
def otp_request(body: OtpRequest, who: Principal = Depends(kiosk_only),
                svc: Services = Depends(services)) -> dict[str, Any]:
    return svc.core.pickup.request_otp(body.phone, who.subject)


@router.post("/otp/verify", summary="Enter with phone + one-time code")
def otp_verify(body: OtpEntry, who: Principal = Depends(kiosk_only),
               svc: Services = Depends(services)) -> dict[str, Any]:
    started = time.perf_counter()
    return _entered(svc, "otp", started, svc.core.pickup.enter_with_otp(body.phone, body.otp, who.subject))


@router.get("/sessions/{session_id}", summary="A pickup session: colour and slots as text")
def session(session_id: str, who: Principal = Depends(kiosk_only),
            svc: Services = Depends(services)) -> dict[str, Any]:
    return svc.core.pickup.session_view(session_id)


@router.post("/extend", summary="Extend a waiting parcel's deadline once, with its code or QR")
def extend(body: ExtendEntry, who: Principal = Depends(kiosk_only),
           svc: Services = Depends(services)) -> dict[str, Any]:
    if body.payload:
        code = parse_qr_payload(body.payload, svc.core.ctx.station_id, svc.core.ctx.secrets.hash_key)
        return svc.core.extensions.by_customer(code, who.subject, checked=True)
    return svc.core.extensions.by_customer(PickupCode.parse(body.code or ""), who.subject)


@router.post("/sessions/{session_id}/report",
             summary="Inside: the lit slot is empty, not my parcel, or damaged (refused)")
def report(session_id: str, body: KioskReport, who: Principal = Depends(kiosk_only),
           svc: Services = Depends(services)) -> dict[str, Any]:
    return svc.core.reports.report(session_id, body.slot, body.problem, kiosk=who.subject,
                                   snapshot=body.snapshot, waybill=body.waybill)


@router.post("/dropoff", summary="Drop off a parcel for sending with a carrier's send code")
def dropoff(body: DropOff, who: Principal = Depends(kiosk_only),
            svc: Services = Depends(services)) -> dict[str, Any]:
    return svc.core.returns.start_dropoff(body.send_code, body.size, who.subject)


@router.post("/courier/pin", summary="Courier entry by id + PIN")
def courier_pin(body: CourierPinEntry, who: Principal = Depends(kiosk_only),
                svc: Services = Depends(services)) -> dict[str, Any]:
    core = svc.core
    courier = core.couriers.check_pin(body.courier_id, body.pin, scope=who.subject)
    return _unlock_for_courier(svc, courier.id, "pin", who.subject, None)


@router.post("/courier/face", summary="Courier entry by face: frames from the entry camera",
             max_body_size=MAX_FRAMES_BODY_BYTES)
async def courier_face(request: Request, who: Principal = Depends(kiosk_only),
                       svc: Services = Depends(services)) -> dict[str, Any]:
    if svc.verify_face is None:
        raise Unavailable("face check is not configured", code="vision_unavailable")
    frames: list[bytes]
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("image/"):
        frames = [await read_image(request)]
    elif ctype.startswith("application/json"):
        frames = await read_frames_json(request)
    elif svc.grab_face_frames is not None:
        frames = await run_in_threadpool(svc.grab_face_frames)
    else:
        raise Unavailable("no face camera is configured", code="camera_unavailable")
    decision = await run_in_threadpool(svc.verify_face, frames)
    snapshot = None
    if svc.save_snapshot is not None and frames:
        snapshot = await run_in_threadpool(svc.save_snapshot, frames[-1])
    core = svc.core
    courier_id = decision.get("courier_id")
    if not courier_id or not decision.get("live"):
        with core.ctx.store.transaction() as tx:
            tx.emit(Event("auth.face.rejected", who.subject, who.subject, {
                "distance": decision.get("distance"), "live": decision.get("live"),
                "reason": decision.get("reason"), **_liveness_data(decision)}, snapshot))
        raise AuthFailed("Face not recognised. Use your courier id and PIN.", code="face_rejected")
    core.couriers.usable(courier_id, core.ctx.clock())
    with core.ctx.store.transaction() as tx:
        tx.emit(Event("auth.face.accepted", courier_id, who.subject, {
            "courier_id": courier_id, "distance": decision.get("distance"),
            **_liveness_data(decision)}, snapshot))
    return await run_in_threadpool(_unlock_for_courier, svc, courier_id, "face", who.subject, snapshot)


_LIVENESS_KEYS = ("liveness", "blink_min_ratio", "passive", "passive_median", "passive_scores")


def _liveness_data(decision: dict[str, Any]) -> dict[str, Any]:
    """What the blink and the passive spoof check each said: scores, never a face."""
    return {k: decision.get(k) for k in _LIVENESS_KEYS}


def _unlock_for_courier(svc: Services, courier_id: str, method: str, kiosk: str,
                        snapshot: str | None) -> dict[str, Any]:
    ctx = svc.core.ctx
    door = ctx.config.doors.entry
    if not ctx.devices.is_online(door):
        raise Unavailable("The entry door is out of order.", code="door_offline")
    with ctx.store.transaction() as tx:
        tx.emit(Event("door.unlock.requested", door, courier_id,
                      {"courier_id": courier_id, "method": method, "kiosk": kiosk}, snapshot))
    outcome = outcome_of(ctx.devices.unlock(door), ctx.command_timeout)
    if outcome.status != "acked":
        raise Unavailable("The door did not open.", code="door_failed")
    return {"courier_id": courier_id, "door": "unlocked", "method": method}


exit_router = APIRouter(prefix="/api/exit", tags=["exit"])


@exit_router.post("/waybills", summary="Exit check with waybills read by the document camera")
def exit_waybills(body: ExitWaybills, who: Principal = Depends(kiosk_only),
                  svc: Services = Depends(services)) -> dict[str, Any]:
    return asdict(svc.core.exit.check(body.waybills, camera=who.subject))


@exit_router.post("/frame", summary="Exit check from a document-camera frame (image body)",
                  max_body_size=MAX_IMAGE_BYTES)
async def exit_frame(request: Request, who: Principal = Depends(kiosk_only),
                     svc: Services = Depends(services)) -> dict[str, Any]:
    if svc.decode_codes is None:
        raise Unavailable("no code reader is configured", code="vision_unavailable")
    if request.headers.get("content-type", "").startswith("image/"):
        image = await read_image(request)
    elif svc.grab_document_frame is not None:
        image = await run_in_threadpool(svc.grab_document_frame)
    else:
        raise Unavailable("no document camera is configured", code="camera_unavailable")
    texts = await run_in_threadpool(svc.decode_codes, image)
    waybills = [t for t in texts if svc.core.ctx.carriers.is_waybill(t)]
    snapshot = await run_in_threadpool(svc.save_snapshot, image) if svc.save_snapshot else None
    result = await run_in_threadpool(lambda: svc.core.exit.check(waybills, snapshot=snapshot,
                                                                 camera=who.subject))
    return {**asdict(result), "read": waybills}


@exit_router.post("/leave", summary="Leave without parcels")
def exit_leave(body: ExitLeave, who: Principal = Depends(kiosk_only),
               svc: Services = Depends(services)) -> dict[str, Any]:
    """The client's session id is a claim: the station opens only for a session inside with
    no take open since it came in (flows/exit.py, ADR 0075)."""
    return asdict(svc.core.exit.leave_empty_handed(body.session_id, snapshot_of=_exit_snapshot(svc)))


# How long a refused "leave without parcels" waits for the exit camera's first frame: a
# working camera has one already (its grabber keeps the newest), so this only bounds the wait
# on a camera that gives none. The customer waits for the answer meanwhile, and so does every
# customer held at the exit with them (ADR 0167).
ALARM_FRAME_WAIT_S = 0.25


def _exit_snapshot(svc: Services) -> Callable[[], str | None] | None:
    """The exit camera's picture for an alarm, or None: a camera that gives no picture must
    never keep the answer (or the door) from the customer."""
    grab, save = svc.grab_document_frame, svc.save_snapshot
    if grab is None or save is None:
        return None

    def take() -> str | None:
        try:
            return save(grab(timeout=ALARM_FRAME_WAIT_S))
        except Exception:  # no camera, no picture: the alarm goes without one
            log.warning("no exit snapshot for the alarm: %s", sys.exc_info()[1])
            return None
    return take
