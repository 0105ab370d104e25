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

from . import accounts, courier, errors, kiosk, operator
from .auth import SAFE_METHODS, SESSION_COOKIE, Authenticator, AuthError
from .models import ERROR_RESPONSES
from .services import Services

STATIC = Path(__file__).parent / "static"
PUBLIC_API = ("/api/health", "/api/courier/login", "/api/operator/login", "/api/kiosk/pair")


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

    def __init__(self, app: ASGIApp, authenticator: Authenticator, origins: list[str] | None = None) -> None:
        self.app = app
        self.authenticator = authenticator
        self.origins = origins or []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal: tuple[int, str, str] | None = None
        if _needs_token(scope):
            try:
                principal = self.authenticator.authenticate(headers, scope.get("path", ""))
            except AuthError as exc:
                refusal = (exc.status, exc.code, exc.message)
            else:
                scope.setdefault("state", {})["principal"] = principal
                if principal.via == "cookie" and scope.get("method") not in SAFE_METHODS:
                    refusal = _cross_site(scope, headers, self.origins, strict=True)
        elif scope.get("method") not in SAFE_METHODS and (
                SESSION_COOKIE in cookie_parser(headers.get("cookie", "")) or scope.get("path") in PUBLIC_API):
            refusal = _cross_site(scope, headers, self.origins, strict=False)
        if refusal is not None:
            # the body is never read: close the connection rather than drain it
            extra = {"WWW-Authenticate": "Bearer"} if refusal[0] == 401 else {}
            response = JSONResponse({"error": refusal[1], "message": refusal[2]}, refusal[0],
                                    headers={**extra, "Connection": "close"})
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


def _cross_site(scope: Scope, headers: Headers, origins: list[str], *, strict: bool) -> tuple[int, str, str] | None:
    """CSRF (ADR 0130): a state-changing request that a browser authenticates by itself (the
    session cookie) must come from this station's own pages. The cookie is SameSite=Strict;
    on top of that the request's Origin must be this station's (or a configured CORS
    origin), and a Sec-Fetch-Site other than same-origin is refused. With `strict`, a
    cookie-authenticated request that carries neither header is refused too (every browser
    sends Origin on a fetch POST; a script uses a bearer session instead)."""
    refused = (403, "cross_site_refused", "a state-changing request from another site is refused")
    site = headers.get("sec-fetch-site", "")
    if site and site not in ("same-origin", "none"):
        return refused
    origin = headers.get("origin", "")
    if origin:
        own = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}"
        return None if origin == own or origin in origins else refused
    return refused if strict and not site else None


def _needs_token(scope: Scope) -> bool:
    path = scope.get("path", "")
    return bool(path.startswith("/api/") and path not in PUBLIC_API and scope.get("method") != "OPTIONS")




def create_app(svc: Services, token_key: bytes, cors_origins: list[str] | None = None,
               service_tokens: bool = False) -> FastAPI:
    app = FastAPI(
        title="Parcel station edge controller",
        version="0.1.0",
        description="Courier shelving, customer pickup, exit check and operator console of one station.",
    )
    app.state.services = svc
    app.state.token_key = token_key
    authenticator = Authenticator(token_key, getattr(svc.core, "accounts", None), service_tokens)
    app.state.authenticator = authenticator
    errors.install(app)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=cors_origins, allow_methods=["*"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(TokenFirst, authenticator=authenticator, origins=cors_origins)

    # the cap is set per router, not on the app: FastAPI's app-wide limit sits outside
    # TokenFirst and would answer a tokenless huge body 413 in plain text instead of 401.
    # Routes are matched one by one in this order, so the busiest come first: the exit and
    # the kiosk (a customer's every visit), then the courier's scans; no two routers hold a
    # path that both match, so the order changes nothing else
    for router in (kiosk.exit_router, kiosk.router, courier.router, accounts.router, operator.router):
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
