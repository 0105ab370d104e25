"""The station's web pages: kiosk, courier handheld and operator console.

Plain HTML, CSS and JavaScript shipped inside the package (no front-end build step, nothing
fetched from the internet: the edge box may have no uplink). The pages themselves are
public: they hold no data. The operator console logs in with a password and then rides an
HttpOnly session cookie; the kiosk pairs once with a code from an admin and keeps its
device credential; the courier page gets a token by id + PIN (ADR 0130). No credential is
ever taken from the URL. See docs/adr/0040-web-pages.md for the security headers."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
PAGES = ("kiosk", "courier", "operator")

# `no-referrer` keeps paths out of Referer headers, and the CSP (no inline script, same-origin only) keeps an injected string from running.
SECURITY_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "media-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'"
    ),
}

INDEX = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Parcel station</title><link rel="icon" href="data:,"><link rel="stylesheet" href="/static/css/station.css"></head>
<body class="index"><main>
<h1>智能驿站 <span class="en">Parcel station</span></h1>
<ul class="index-links">
<li><a href="/kiosk">取件终端 <span class="en">Kiosk</span></a></li>
<li><a href="/courier">快递员 <span class="en">Courier</span></a></li>
<li><a href="/operator">运营控制台 <span class="en">Operator console</span></a></li>
<li><a href="/docs">API</a></li>
</ul>
<p class="hint">Operators log in with an account (<code>station operator add</code>); a kiosk
screen pairs once with a code from an admin (<code>station kiosk pair</code>).</p>
</main></body></html>
"""


def _page(name: str) -> HTMLResponse:
    """Read the page on each request: it is small, and an edited file shows without restart."""
    return HTMLResponse((STATIC / f"{name}.html").read_text(encoding="utf-8"), headers=SECURITY_HEADERS)


def install(app: FastAPI) -> None:
    """Mount /static and the page routes on `app` (called by create_app when present)."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", response_class=HTMLResponse, tags=["pages"], summary="Index of the pages")
    def index() -> HTMLResponse:
        return HTMLResponse(INDEX, headers=SECURITY_HEADERS)

    @app.get("/kiosk", response_class=HTMLResponse, tags=["pages"],
             summary="Kiosk page: pickup by code or phone + one-time code")
    def kiosk_page() -> HTMLResponse:
        return _page("kiosk")

    @app.get("/courier", response_class=HTMLResponse, tags=["pages"],
             summary="Courier page: log in, scan waybills, follow placements")
    def courier_page() -> HTMLResponse:
        return _page("courier")

    @app.get("/operator", response_class=HTMLResponse, tags=["pages"],
             summary="Operator console: live shelf map, event log, replay")
    def operator_page() -> HTMLResponse:
        return _page("operator")
