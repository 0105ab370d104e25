"""The FastAPI application: routers per role, JSON errors, CORS closed unless configured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import courier, errors, kiosk, operator
from .auth import TokenError, read_token
from .models import ERROR_RESPONSES
from .services import Services

STATIC = Path(__file__).parent / "static"
PUBLIC_API = ("/api/health", "/api/courier/login")


# Request bodies are capped at the edge, per route (ADR 0083): JSON bodies are a few hundred
# bytes, so 64 KiB is generous; routes that take an image (or frames of images) get the image
# gate's limit on their decorator. FastAPI counts while it streams, so a chunked body without
# Content-Length is cut off at the limit too, and a declared length above it is refused
# before a byte of the body is read.
JSON_BODY_LIMIT = 64 * 1024


class TokenFirst:
    """A caller without a valid token is refused before its body is read or parsed: no
    token, a forged one or an expired one gets 401 at once, so a made-up bearer token cannot
    make the station buffer anything (#14.7), and a malformed body cannot tell an anonymous
    caller anything (401, not 422). The role is checked by the route's dependency, after a
    body that the edge has already capped.

    Plain ASGI rather than `@app.middleware("http")`: that wrapper runs every request
    through an extra task and memory streams, which cost more than the station's own work
    per request under load (measured with the simulator's week scenario)."""

    def __init__(self, app: ASGIApp, token_key: bytes) -> None:
        self.app = app
        self.token_key = token_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if _needs_token(scope):
            refusal = _token_refusal(headers, self.token_key)
            if refusal is not None:
                # the body is never read: close the connection rather than drain it
                response = JSONResponse({"error": refusal[0], "message": refusal[1]}, 401,
                                        headers={"WWW-Authenticate": "Bearer", "Connection": "close"})
                await response(scope, receive, send)
                return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > JSON_BODY_LIMIT:
            # Starlette answers a declared length over a route's cap with its own plain-text
            # 413 before the route runs; give it the JSON body every other refusal has
            send = _json_413(send)
        await self.app(scope, receive, send)


def _json_413(send: Send) -> Send:
    replaced = False

    async def sending(message: Message) -> None:
        nonlocal replaced
        if message["type"] == "http.response.start" and message["status"] == 413 \
                and b"text/plain" in Headers(raw=message.get("headers", [])).get("content-type", "").encode():
            replaced = True
            body = JSONResponse(_TOO_LARGE, 413, headers={"Connection": "close"})
            await send({"type": "http.response.start", "status": 413, "headers": body.raw_headers})
            await send({"type": "http.response.body", "body": body.body})
            return
        if replaced and message["type"] == "http.response.body":
            return
        await send(message)

    return sending


_TOO_LARGE = {"error": "body_too_large", "message": "the request body is larger than this route takes"}


def _token_refusal(headers: Headers, key: bytes) -> tuple[str, str] | None:
    """What `auth.principal_from` would answer, as (code, message); None for a valid token."""
    header = headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    if not token:
        token = cookie_parser(headers.get("cookie", "")).get("ps_token", "")
    if not token:
        return "unauthenticated", "a bearer token is required"
    try:
        read_token(key, token)
    except TokenError as exc:
        return "invalid_token", str(exc)
    return None


def _needs_token(scope: Scope) -> bool:
    path = scope.get("path", "")
    return bool(path.startswith("/api/") and path not in PUBLIC_API and scope.get("method") != "OPTIONS")




def create_app(svc: Services, token_key: bytes, cors_origins: list[str] | None = None) -> FastAPI:
    app = FastAPI(
        title="Parcel station edge controller",
        version="0.1.0",
        description="Courier shelving, customer pickup, exit check and operator console of one station.",
    )
    app.state.services = svc
    app.state.token_key = token_key
    errors.install(app)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=cors_origins, allow_methods=["*"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(TokenFirst, token_key=token_key)

    # the cap is set per router, not on the app: FastAPI's app-wide limit sits outside
    # TokenFirst and would answer a tokenless huge body 413 in plain text instead of 401
    for router in (courier.router, kiosk.router, kiosk.exit_router, operator.router):
        app.include_router(router, responses=ERROR_RESPONSES, max_body_size=JSON_BODY_LIMIT)

    @app.get("/api/health", tags=["public"], summary="Liveness: the service answers")
    def health() -> dict[str, Any]:
        return {"ok": True, "station": svc.core.ctx.station_id, "seq": svc.core.ctx.store.last_seq}

    try:
        from . import pages

        pages.install(app)
    except ImportError:  # pages are optional in a stripped-down build
        pass
    return app
