"""Operator login, logout and sessions; kiosk pairing and revocation (#20.1, ADR 0130).

The session id travels only in the `ps_session` cookie (HttpOnly, SameSite=Strict, Secure
when the page was served over TLS); answers name a session by its handle, never its id.
A pairing code is shown once, in the admin's answer; the credential once, in the kiosk's."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool

from .auth import SESSION_COOKIE, Principal, require
from .models import KioskPairing, OperatorLogin, RevokeAll
from .services import Services, services

router = APIRouter(tags=["accounts"])
operator_only = require("operator")
admin_only = require("operator", admin=True)
kiosk_only = require("kiosk")


def _client(request: Request) -> str:
    return f"http:{request.client.host}" if request.client else "http"


@router.post("/api/operator/login", summary="Log in with operator id + password (sets the session cookie)",
             responses={401: {"description": "wrong operator id or password"},
                        429: {"description": "locked out after too many wrong passwords"}})
async def login(body: OperatorLogin, request: Request, response: Response,
                svc: Services = Depends(services)) -> dict[str, Any]:
    new = await run_in_threadpool(svc.core.accounts.login, body.operator_id, body.password,
                                  client=_client(request))
    cfg = svc.core.ctx.config.operators
    response.set_cookie(SESSION_COOKIE, new.session_id, max_age=int(cfg.session_max_s), path="/api",
                        httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return {"operator_id": new.info.operator_id, "role": new.info.role, "session": new.info.handle,
            "idle_s": cfg.session_idle_s}


@router.post("/api/operator/logout", summary="End this session")
def logout(response: Response, who: Principal = Depends(operator_only),
           svc: Services = Depends(services)) -> dict[str, Any]:
    if who.session is not None:
        from station.flows.accounts import SessionInfo

        svc.core.accounts.logout(SessionInfo(who.subject, who.level, who.session))
    response.delete_cookie(SESSION_COOKIE, path="/api", httponly=True, samesite="strict")
    return {"logged_out": True}


@router.get("/api/operator/me", summary="Who this session belongs to")
def me(who: Principal = Depends(operator_only)) -> dict[str, Any]:
    return {"operator_id": who.subject, "role": who.level, "session": who.session}


@router.get("/api/operator/sessions", summary="Open operator sessions (admin)")
def sessions(who: Principal = Depends(admin_only), svc: Services = Depends(services)) -> list[dict[str, Any]]:
    return svc.core.accounts.sessions()


@router.post("/api/operator/sessions/{handle}/revoke", summary="End one session (admin)")
def revoke(handle: str, who: Principal = Depends(admin_only), svc: Services = Depends(services)) -> dict[str, Any]:
    return {"revoked": svc.core.accounts.revoke(handle, actor=who.subject)}


@router.post("/api/operator/sessions/revoke-all", summary="End every session, or every one of an operator (admin)")
def revoke_all(body: RevokeAll, who: Principal = Depends(admin_only),
               svc: Services = Depends(services)) -> dict[str, Any]:
    return {"revoked": svc.core.accounts.revoke_all(actor=who.subject, operator_id=body.operator_id)}


@router.get("/api/operator/kiosks", summary="Paired kiosk screens (admin)")
def kiosks(who: Principal = Depends(admin_only), svc: Services = Depends(services)) -> list[dict[str, Any]]:
    return svc.core.accounts.kiosks()


@router.post("/api/operator/kiosks/{device_id}/pairing", summary="A one-time pairing code for a kiosk screen (admin)")
def pairing(device_id: str, who: Principal = Depends(admin_only),
            svc: Services = Depends(services)) -> dict[str, Any]:
    code = svc.core.accounts.create_pairing(device_id, actor=who.subject)
    return {"device_id": device_id, "code": code, "expires_in_s": svc.core.ctx.config.operators.pairing_ttl_s}


@router.post("/api/operator/kiosks/{device_id}/revoke", summary="Revoke a kiosk screen's credential (admin)")
def revoke_kiosk(device_id: str, who: Principal = Depends(admin_only),
                 svc: Services = Depends(services)) -> dict[str, Any]:
    svc.core.accounts.revoke_kiosk(device_id, actor=who.subject)
    return {"device_id": device_id, "revoked": True}


@router.post("/api/kiosk/pair", summary="Trade a one-time pairing code for this screen's credential",
             responses={401: {"description": "wrong or expired pairing code"},
                        429: {"description": "locked out after too many wrong codes"}})
def pair(body: KioskPairing, request: Request, svc: Services = Depends(services)) -> dict[str, Any]:
    device_id, credential = svc.core.accounts.pair(body.code, client=_client(request))
    return {"device_id": device_id, "credential": credential}


@router.get("/api/kiosk/me", summary="Which kiosk this credential belongs to")
def kiosk_me(who: Principal = Depends(kiosk_only)) -> dict[str, Any]:
    return {"device_id": who.subject}
