"""Every refusal is a JSON body `{"error": code, "message": text}` with a fitting status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from station.domain.errors import DomainError, LockedOut
from station.flows.errors import FlowError
from station.store.db import StoreError, StoreFull

from .auth import AuthError

log = logging.getLogger("station.api")


def _body(code: str, message: str, **extra: object) -> dict[str, object]:
    return {"error": code, "message": message, **extra}


def install(app: FastAPI) -> None:
    @app.exception_handler(AuthError)
    async def _auth(_: Request, exc: AuthError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(_body(exc.code, exc.message), exc.status, headers=headers)

    @app.exception_handler(LockedOut)
    async def _locked(_: Request, exc: LockedOut) -> JSONResponse:
        return JSONResponse(_body(exc.code, exc.message, retry_after_s=round(exc.retry_after_s, 1)),
                            429, headers={"Retry-After": str(int(exc.retry_after_s) + 1)})

    @app.exception_handler(FlowError)
    async def _flow(_: Request, exc: FlowError) -> JSONResponse:
        return JSONResponse(_body(exc.code, exc.message, **exc.details), exc.status)

    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(_body(exc.code, exc.message), 422)

    from station.vision.images import ImageError

    @app.exception_handler(ImageError)
    async def _image(_: Request, exc: ImageError) -> JSONResponse:
        return JSONResponse(_body(f"image_{exc.reason}", str(exc)), 422)

    @app.exception_handler(StoreFull)
    async def _full(_: Request, exc: StoreFull) -> JSONResponse:
        return JSONResponse(_body("storage_full", str(exc)), 507)

    @app.exception_handler(StoreError)
    async def _store(_: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse(_body("storage_error", str(exc)), 503)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e["loc"][1:]) or "body", "problem": e["msg"]}
            for e in exc.errors()
        ]
        return JSONResponse(_body("invalid_request", "the request is not valid", problems=problems), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 413:  # the edge's body cap (api/app.py, ADR 0083)
            # close rather than drain whatever the client still sends
            return JSONResponse(_body("body_too_large", "the request body is larger than this route takes"),
                                413, headers={"Connection": "close"})
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(_body(code, str(exc.detail)), exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return JSONResponse(_body("internal_error", "the station could not do that; it is logged"), 500)
