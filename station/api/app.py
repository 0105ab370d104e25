"""The FastAPI application: routers per role, JSON errors, CORS closed unless configured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from . import courier, errors, kiosk, operator
from .models import ERROR_RESPONSES
from .services import Services

STATIC = Path(__file__).parent / "static"
PUBLIC_API = ("/api/health", "/api/courier/login")


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
    @app.middleware("http")
    async def token_first(request: Request, call_next: Any) -> Response:
        """A caller with no token at all is refused before its body is read or parsed, so
        a malformed body cannot tell an anonymous caller anything (401, not 422)."""
        path = request.url.path
        if path.startswith("/api/") and path not in PUBLIC_API and request.method != "OPTIONS":
            header = request.headers.get("authorization", "")
            if not header.lower().startswith("bearer ") and not request.cookies.get("ps_token"):
                return JSONResponse({"error": "unauthenticated", "message": "a bearer token is required"},
                                    401, headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    app.include_router(courier.router, responses=ERROR_RESPONSES)
    app.include_router(kiosk.router, responses=ERROR_RESPONSES)
    app.include_router(kiosk.exit_router, responses=ERROR_RESPONSES)
    app.include_router(operator.router, responses=ERROR_RESPONSES)

    @app.get("/api/health", tags=["public"], summary="Liveness: the service answers")
    def health() -> dict[str, Any]:
        return {"ok": True, "station": svc.core.ctx.station_id, "seq": svc.core.ctx.store.last_seq}

    try:
        from . import pages

        pages.install(app)
    except ImportError:  # pages are optional in a stripped-down build
        pass
    return app
