"""Operator routes: live room state, the event log with filters, replay, verification,
export, couriers, alarms, snapshots, and a server-sent event stream."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as Path_
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse

from station.domain.phones import phone_hash
from station.flows import takes
from station.flows.errors import FlowError, NotFound, Unavailable
from station.flows.shelfmap import room_state
from station.store.archive import verify_log
from station.store.db import Store, StoreError
from station.store.eventlog import Event, iter_events
from station.store.replay import replay_into

from .auth import Principal, require
from .images import MAX_IMAGE_BYTES, read_image
from .models import ExtendBy, NewCourier, NewPin, PlacementReport, ReachableFlag, TakeResolution
from .services import Services, services

# a snapshot's SHA-256 or a room picture's / clip's random id (as vision/snapshots.py names them)
# matched whole (fullmatch): with match and "$" a trailing newline got in
_REF = re.compile(r"[0-9a-f]{64}|[0-9a-f]{32}")


# a picture served decrypted is personal data: no copy in the browser's cache on disk, where it
# would outlive the session and the encryption at rest (the console keeps it as a blob: URL)
_NO_STORE = {"Cache-Control": "private, no-store"}


def is_ref(ref: str) -> bool:
    return bool(_REF.fullmatch(ref))

router = APIRouter(prefix="/api/operator", tags=["operator"])
operator_only = require("operator")
# couriers, recalls, alarms and doors/shelves by hand are for admins; a viewer reads (#20.1)
admin_only = require("operator", admin=True)
# sequence numbers are SQLite integers: a larger one is refused at the edge (422), not by the
# database (which would raise in the middle of a request)
MAX_SEQ = 2**63 - 1


@router.get("/state", summary="The room now: shelves, lights, doors, devices, alarms")
def state(who: Principal = Depends(operator_only), svc: Services = Depends(services)) -> dict[str, Any]:
    out = room_state(svc.core.ctx)
    out["reported"] = svc.device_status()
    return out


def _filters(since: str | None, until: str | None, type_: str | None, subject: str | None,
             actor: str | None, phone: str | None, svc: Services) -> dict[str, Any]:
    text = None
    if phone:
        text = phone_hash(phone, svc.core.ctx.secrets.hash_key)
    return {"since": since, "until": until, "types": type_.split(",") if type_ else None,
            "subject": subject, "actor": actor, "text": text}


@router.get("/events", summary="The event log, filtered, newest first")
def events(since: str | None = None, until: str | None = None,
           type: str | None = Query(default=None, description="types, comma separated; a* matches a prefix"),
           subject: str | None = None, actor: str | None = None,
           phone: str | None = Query(default=None, description="looked up by its keyed hash"),
           after_seq: int = Query(default=0, ge=0, le=MAX_SEQ), limit: int = Query(default=200, ge=1, le=5000),
           who: Principal = Depends(operator_only), svc: Services = Depends(services)) -> dict[str, Any]:
    f = _filters(since, until, type, subject, actor, phone, svc)
    with svc.core.ctx.store.snapshot() as conn:
        rows = [e.as_dict() for e in iter_events(conn, after_seq=after_seq, limit=limit,
                                                  descending=after_seq == 0, **f)]
    return {"events": rows, "last_seq": svc.core.ctx.store.last_seq}


@router.get("/events/export", summary="Export the log as JSON lines or CSV",
            response_class=Response,
            responses={200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}},
                                         "text/csv": {"schema": {"type": "string"}}},
                             "description": "one event per line"}})
def export(format: str = Query(default="jsonl", pattern="^(jsonl|csv)$"), since: str | None = None,
           until: str | None = None, type: str | None = None,
           who: Principal = Depends(operator_only), svc: Services = Depends(services)) -> Response:
    f = _filters(since, until, type, None, None, None, svc)
    with svc.core.ctx.store.snapshot() as conn:
        rows = [e.as_dict() for e in iter_events(conn, **f)]
    if format == "jsonl":
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        return Response(body, media_type="application/x-ndjson")
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["seq", "ts", "type", "actor", "subject", "data", "snapshot", "prev_hash", "hash"])
    for r in rows:
        writer.writerow([r["seq"], r["ts"], r["type"], r["actor"], r["subject"],
                         json.dumps(r["data"], ensure_ascii=False), r["snapshot"] or "", r["prev_hash"], r["hash"]])
    return Response(buf.getvalue(), media_type="text/csv")


def _archive(svc: Services) -> Path | None:
    path = Path(svc.core.ctx.config.retention.archive_dir)
    return path if path.is_dir() else None


@router.get("/verify", summary="Walk the hash chain (from the retention checkpoint; with archive=true the archive too)")
def verify(archive: bool = False, who: Principal = Depends(operator_only),
           svc: Services = Depends(services)) -> dict[str, Any]:
    with svc.core.ctx.store.snapshot() as conn:
        return asdict(verify_log(conn, _archive(svc) if archive else None))


@router.get("/replay", summary="The room as it was after event `seq` (or at time `at`)")
def replay(seq: int | None = Query(default=None, ge=0, le=MAX_SEQ), at: str | None = None,
           who: Principal = Depends(operator_only), svc: Services = Depends(services)) -> dict[str, Any]:
    if seq is None and at is None:
        raise FlowError("give seq or at", code="invalid_request", status=422)
    ctx = svc.core.ctx
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "replay.db"
        try:
            with ctx.store.snapshot() as conn:
                last = replay_into(conn, out, until_seq=seq, until_time=at, archive_dir=_archive(svc))
        except ValueError as exc:
            raise FlowError(f"not a time: {exc}", code="invalid_request", status=422) from None
        except FileNotFoundError as exc:
            raise Unavailable(str(exc), code="archive_unavailable") from None
        past = Store(out).open()
        try:
            ts_row = past.query_one("SELECT ts FROM events WHERE seq = ?", (last,))
            from station.store.eventlog import parse_utc

            when = parse_utc(ts_row["ts"]) if ts_row else 0.0
            view = room_state(ctx, past, now=when)
            view["at"] = ts_row["ts"] if ts_row else None
            event = past.query_one("SELECT seq, ts, type, actor, subject, data, snapshot FROM events"
                                   " WHERE seq = ?", (last,))
            if event:  # with its data: the step shows the room picture it references
                event = {**event, "data": json.loads(event["data"])}
            view["event"] = event
            return view
        finally:
            past.close()


@router.get("/couriers")
def couriers(who: Principal = Depends(operator_only), svc: Services = Depends(services)) -> list[dict[str, Any]]:
    return [asdict(c) for c in svc.core.couriers.all()]


@router.post("/couriers", status_code=201)
def add_courier(body: NewCourier, who: Principal = Depends(admin_only),
                svc: Services = Depends(services)) -> dict[str, Any]:
    c = svc.core.couriers.add(body.courier_id, body.carrier, body.name, body.pin, actor=who.subject,
                              valid_from=body.valid_from, valid_until=body.valid_until)
    return asdict(c)


@router.post("/couriers/{courier_id}/pin", summary="Give a courier a new PIN")
def change_pin(courier_id: str, body: NewPin, who: Principal = Depends(admin_only),
               svc: Services = Depends(services)) -> dict[str, Any]:
    return asdict(svc.core.couriers.change_pin(courier_id, body.pin, actor=who.subject))


@router.post("/couriers/{courier_id}/disable")
def disable_courier(courier_id: str, who: Principal = Depends(admin_only),
                    svc: Services = Depends(services)) -> dict[str, Any]:
    return asdict(svc.core.couriers.set_active(courier_id, False, actor=who.subject))


@router.post("/couriers/{courier_id}/enable")
def enable_courier(courier_id: str, who: Principal = Depends(admin_only),
                   svc: Services = Depends(services)) -> dict[str, Any]:
    return asdict(svc.core.couriers.set_active(courier_id, True, actor=who.subject))


@router.delete("/couriers/{courier_id}")
def remove_courier(courier_id: str, who: Principal = Depends(admin_only),
                   svc: Services = Depends(services)) -> dict[str, Any]:
    svc.core.couriers.remove(courier_id, actor=who.subject)
    return {"courier_id": courier_id, "removed": True}


@router.post("/couriers/{courier_id}/face", summary="Enrol a face image (image body; repeat for up to 5)",
             max_body_size=MAX_IMAGE_BYTES)
async def enrol_face(courier_id: str, request: Request, who: Principal = Depends(admin_only),
                     svc: Services = Depends(services)) -> dict[str, Any]:
    if svc.enrol_face is None:
        raise Unavailable("face enrolment is not configured", code="vision_unavailable")
    image = await read_image(request)
    return await run_in_threadpool(svc.enrol_face, courier_id, [image])


@router.post("/parcels/{parcel_id}/recall")
def recall(parcel_id: str, who: Principal = Depends(admin_only),
           svc: Services = Depends(services)) -> dict[str, Any]:
    svc.core.returns.recall(parcel_id, actor=who.subject)
    return {"parcel_id": parcel_id, "state": "recalled"}


@router.post("/parcels/{parcel_id}/extend", summary="Move a waiting parcel's deadline on")
def extend(parcel_id: str, body: ExtendBy, who: Principal = Depends(operator_only),
           svc: Services = Depends(services)) -> dict[str, Any]:
    return svc.core.extensions.by_operator(parcel_id, body.seconds, who.subject)


@router.get("/recipients/reachable",
            summary="Recipients flagged as needing a reachable slot (masked numbers)")
def reachable_flags(who: Principal = Depends(operator_only),
                    svc: Services = Depends(services)) -> dict[str, Any]:
    reachable = svc.core.reachable
    return {"rows": list(svc.core.ctx.config.care.reachable_rows), "slots": len(reachable.slots),
            "flags": reachable.all()}


@router.post("/recipients/reachable",
             summary="Set or clear a recipient's need for a reachable slot, by their number "
                     "(hashed at once, never stored)",
             responses={422: {"description": "not a mobile number"}})
def set_reachable_flag(body: ReachableFlag, who: Principal = Depends(admin_only),
                       svc: Services = Depends(services)) -> dict[str, Any]:
    change = svc.core.reachable.by_operator(body.phone, body.needs_reachable_slot, who.subject)
    return {**change.as_dict(), "reachable_rows_configured": svc.core.reachable.configured}


@router.get("/parcels")
def parcels(state: str | None = None, limit: int = Query(default=200, ge=1, le=5000),
            who: Principal = Depends(operator_only), svc: Services = Depends(services)) -> list[dict[str, Any]]:
    sql = ("SELECT id, waybill, carrier, direction, state, slot, size, phone_masked, courier_id,"
           " created_at, updated_at, deadline FROM parcels")
    args: list[Any] = []
    if state:
        sql += " WHERE state = ?"
        args.append(state)
    sql += " ORDER BY created_at DESC LIMIT ?"
    args.append(limit)
    return [dict(r) for r in svc.core.ctx.store.query(sql, args)]


@router.post("/alarms/{alarm_id}/ack")
def ack_alarm(alarm_id: str, who: Principal = Depends(admin_only),
              svc: Services = Depends(services)) -> dict[str, Any]:
    store = svc.core.ctx.store
    if store.query_one("SELECT 1 FROM alarms WHERE id = ?", (alarm_id,)) is None:
        raise NotFound(f"no alarm {alarm_id}")
    with store.transaction() as tx:
        tx.emit(Event("alarm.acknowledged", alarm_id, who.subject, {"alarm_id": alarm_id}))
    return {"alarm_id": alarm_id, "acknowledged": True}


@router.get("/takes", summary="Takes the shelves sensed that nothing explains yet (they hold the exit)")
def open_takes(who: Principal = Depends(operator_only),
               svc: Services = Depends(services)) -> list[dict[str, Any]]:
    return [dict(r) for r in takes.unresolved(svc.core.ctx.store)]


@router.post("/takes/{take_seq}/resolve", summary="Settle a take after looking at the snapshots")
def resolve_take(take_seq: int = Path_(ge=1, le=MAX_SEQ), body: TakeResolution | None = None,
                 who: Principal = Depends(operator_only), svc: Services = Depends(services)) -> dict[str, Any]:
    return takes.resolve(svc.core.ctx, take_seq, who.subject, body.note if body else "")


@router.get("/snapshots/{ref}", summary="A snapshot or room picture JPEG by its reference",
            response_class=Response,
            responses={200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
                             "description": "the JPEG (decrypted: on disk it is AES-GCM ciphertext)"}})
def snapshot(ref: str, who: Principal = Depends(operator_only), svc: Services = Depends(services)) -> Response:
    if svc.snapshot_load is None or not is_ref(ref):
        raise NotFound("no such snapshot")
    data = svc.snapshot_load(ref)
    if data is None:
        # the event keeps its reference after the file is pruned (#14.13): say so
        raise NotFound("snapshot pruned: no longer on disk (past snapshot_retention_days, or "
                       "removed to keep the disk free, or never written); the event keeps its"
                       " reference", code="snapshot_pruned")
    return Response(data, media_type="image/jpeg", headers=_NO_STORE)


@router.get("/clips/{ref}", summary="An alarm clip: its frames' offsets from the alarm (s)")
def clip(ref: str, who: Principal = Depends(operator_only), svc: Services = Depends(services)) -> dict[str, Any]:
    frames = _clip(svc, ref)
    return {"clip": ref, "frames": [{"n": n, "t": t} for n, (t, _) in enumerate(frames)]}


@router.get("/clips/{ref}/{n}", summary="Frame n of an alarm clip (JPEG, decrypted)",
            response_class=Response,
            responses={200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
                             "description": "the JPEG"}})
def clip_frame(ref: str, n: int = Path_(ge=0, le=10_000), who: Principal = Depends(operator_only),
               svc: Services = Depends(services)) -> Response:
    frames = _clip(svc, ref)
    if n >= len(frames):
        raise NotFound(f"the clip has {len(frames)} frames")
    return Response(frames[n][1], media_type="image/jpeg", headers=_NO_STORE)


def _clip(svc: Services, ref: str) -> list[tuple[float, bytes]]:
    if svc.clip_load is None or not is_ref(ref):
        raise NotFound("no such clip")
    frames = svc.clip_load(ref)
    if frames is None:
        raise NotFound("clip pruned or never written (the camera gave no frames)", code="clip_pruned")
    return frames


@router.post("/placements", summary="Report a placement by hand (a stuck or missing sensor)")
def report_placement(body: PlacementReport, who: Principal = Depends(admin_only),
                     svc: Services = Depends(services)) -> dict[str, Any]:
    if body.device not in svc.core.ctx.config.shelf_devices:
        raise NotFound(f"no shelf device {body.device}")
    svc.core.on_device_event(body.device, "placement", {"row": body.row, "col": body.col,
                                                        "action": body.action, "source": who.subject})
    return {"accepted": True}


@router.get("/stream", summary="Server-sent events: each new log event as it is committed",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                             "description": "event: log, data: the event row as JSON"}})
async def stream(request: Request, after_seq: int = Query(default=-1, ge=-1, le=MAX_SEQ),
                 who: Principal = Depends(operator_only), svc: Services = Depends(services)) -> StreamingResponse:
    store = svc.core.ctx.store
    start = store.last_seq if after_seq < 0 else after_seq

    async def gen() -> AsyncIterator[bytes]:
        last = start
        yield b": connected\n\n"
        idle = 0
        while not await request.is_disconnected():
            def fetch(after: int) -> list[dict[str, Any]]:
                with store.snapshot() as conn:
                    return [e.as_dict() for e in iter_events(conn, after_seq=after, limit=500)]
            try:
                rows = await run_in_threadpool(fetch, last)
            except StoreError:  # the station is stopping: end the stream, the page reconnects
                return
            for r in rows:
                last = r["seq"]
                yield f"id: {r['seq']}\nevent: log\ndata: {json.dumps(r, ensure_ascii=False)}\n\n".encode()
            idle = 0 if rows else idle + 1
            if idle and idle % 30 == 0:
                yield b": keep-alive\n\n"
            await asyncio.sleep(0.3)

    return StreamingResponse(gen(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
