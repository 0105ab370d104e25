"""`fleet serve`: the fleet API and its pages (stations, trace, couriers), for operators.

Operators log in with a role token like the station's (ADR 0004): `pf1.<role>.<subject>.
<expires>.<mac>`, an HMAC with the fleet's own token key (`fleet token [--role admin]`). An
`operator` reads (stations, trace, the courier registry); an `admin` may also enrol a
courier's face (POST /api/couriers/{id}/faces). The pages are plain
files that keep the token in the browser's session storage and read the JSON API; they
render every value as text, never as HTML.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import threading
import time
from typing import Any

import psycopg
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse

from fleet.config import FleetConfig, FleetSecrets
from fleet.store import connect, fleet_alarms, stations, trace

_SUBJECT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _mac(key: bytes, body: str) -> str:
    return base64.urlsafe_b64encode(hmac.new(key, body.encode(), hashlib.sha256).digest()[:18]).decode()


ROLES = ("operator", "admin")
MAX_ENROL_BODY = 5 * 8 * 1024 * 1024 * 4 // 3 + 4096  # five 8 MiB photos as base64 JSON


def make_token(key: bytes, subject: str, ttl_s: float, now: float | None = None, role: str = "operator") -> str:
    if not _SUBJECT.match(subject):
        raise ValueError("subject: letters, digits, _ and -, up to 64")
    if role not in ROLES:
        raise ValueError(f"role: one of {', '.join(ROLES)}")
    body = f"pf1.{role}.{subject}.{int((now or time.time()) + ttl_s)}"
    return f"{body}.{_mac(key, body)}"


def read_principal(key: bytes, token: str, now: float | None = None) -> tuple[str, str]:
    """(role, subject) of a good token, or ValueError."""
    parts = token.split(".")
    if len(parts) != 5 or parts[0] != "pf1" or parts[1] not in ROLES or not parts[3].isdigit():
        raise ValueError("not a fleet token")
    body = ".".join(parts[:4])
    if not hmac.compare_digest(_mac(key, body), parts[4]):
        raise ValueError("bad signature")
    if int(parts[3]) < (now or time.time()):
        raise ValueError("expired")
    return parts[1], parts[2]


def read_token(key: bytes, token: str, now: float | None = None) -> str:
    """The subject of a good token of any role, or ValueError."""
    return read_principal(key, token, now)[1]


class _Connections:
    """One connection per worker thread, reopened after a failure (the database may restart)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._local = threading.local()

    def get(self) -> psycopg.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = connect(self._dsn)
            self._local.conn = conn
        return conn

    def drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass
        self._local.conn = None


def create_app(dsn: str, secrets: FleetSecrets, config: FleetConfig | None = None) -> FastAPI:
    cfg = config or FleetConfig()
    conns = _Connections(dsn)
    app = FastAPI(title="parcel station fleet", docs_url=None, redoc_url=None)

    def principal(request: Request) -> tuple[str, str]:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            raise HTTPException(401, "log in with a fleet operator token")
        try:
            return read_principal(secrets.token_key, header[7:].strip())
        except ValueError as exc:
            raise HTTPException(401, f"token refused: {exc}") from None

    def operator(who: tuple[str, str] = Depends(principal)) -> str:
        return who[1]

    def admin(who: tuple[str, str] = Depends(principal)) -> str:
        if who[0] != "admin":
            raise HTTPException(403, "enrolling needs a fleet admin token (fleet token --role admin)")
        return who[1]

    engine_lock = threading.Lock()
    engines: list[Any] = []

    def face_engine() -> Any:
        """The station's face encoder, loaded on the first enrolment (its models cost ~1 s and
        ~100 MB, which a fleet that only reads never pays)."""
        with engine_lock:
            if not engines:
                from station.vision.faces import FaceEngine

                engines.append(FaceEngine())
            return engines[0]

    def query(fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(conns.get(), *args, **kw)
        except psycopg.OperationalError:
            conns.drop()
            raise HTTPException(503, "the fleet database is not reachable") from None

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        try:
            conns.get().execute("SELECT 1")
        except psycopg.OperationalError:
            conns.drop()
            return JSONResponse({"ok": False, "database": "down"}, status_code=503)  # type: ignore[return-value]
        return {"ok": True}

    @app.get("/api/stations")
    def api_stations(who: str = Depends(operator)) -> dict[str, Any]:
        rows = query(stations, cfg.serve.online_window_s)
        for r in rows:
            r["console_url"] = r["console_url"] or cfg.consoles.get(r["station"])
        return {"stations": rows}

    @app.get("/api/alarms")
    def api_alarms(station: str | None = None, all: bool = False,
                   who: str = Depends(operator)) -> dict[str, Any]:
        return {"alarms": query(fleet_alarms, station, open_only=not all)}

    @app.get("/api/trace")
    def api_trace(q: str = Query("", max_length=200), phone: str = Query("", max_length=40),
                  limit: int = Query(2000, ge=1, le=10000), who: str = Depends(operator)) -> dict[str, Any]:
        if phone:
            if secrets.hash_key is None:
                raise HTTPException(400, "searching by phone needs the stations' hash_key in the fleet secrets")
            from station.domain.phones import normalise_phone, phone_hash

            try:
                q = "r:" + phone_hash(normalise_phone(phone), secrets.hash_key)
            except ValueError:
                raise HTTPException(400, "not a phone number") from None
        if not q.strip():
            raise HTTPException(400, "give a waybill, parcel id, courier id or phone")
        started = time.perf_counter()
        rows = query(trace, q, limit=limit)
        for r in rows:
            r["console_url"] = r["console_url"] or cfg.consoles.get(r["station"])
        return {"query": q, "events": rows, "took_ms": round((time.perf_counter() - started) * 1000, 1)}

    @app.get("/api/couriers")
    def api_couriers(who: str = Depends(operator)) -> dict[str, Any]:
        """The courier registry, read-only: carrier, name, validity, stations, disabled, face
        enrolled or not. Never a PIN hash or a template (fleet/couriers.py `registry`)."""
        from fleet import couriers as registry

        return {"couriers": query(registry.registry)}

    @app.post("/api/couriers/{courier_id}/faces")
    async def enrol_face(courier_id: str, request: Request, who: str = Depends(admin)) -> dict[str, Any]:
        """1-5 photos of the courier: one image body (image/jpeg, image/png) or
        {"images": [base64, ...]}. Each is checked as a station checks an enrolment photo;
        the first that fails says which check (422, never a traceback)."""
        images = await _read_images(request)
        if secrets.template_key is None:
            raise HTTPException(503, "the fleet has no template_key: face templates cannot be stored")
        from fleet import couriers as registry

        cipher = registry.template_cipher(secrets.template_key)
        try:
            # in a worker thread, on that thread's own connection (the photos cost ~0.1 s each)
            n = await run_in_threadpool(lambda: registry.enrol_faces(conns.get(), courier_id, images,
                                                                     face_engine(), cipher))
        except registry.FaceRefused as exc:
            return JSONResponse({"error": f"enrolment_{exc.check}", "detail": str(exc),  # type: ignore[return-value]
                                 "image_index": exc.image_index}, status_code=422)
        except registry.RegistryError as exc:
            raise HTTPException(404, str(exc)) from None
        except psycopg.OperationalError:
            conns.drop()
            raise HTTPException(503, "the fleet database is not reachable") from None
        logging.getLogger("fleet.web").info("face of courier %s enrolled by %s (%d templates)", courier_id, who, n)
        return {"courier_id": courier_id, "templates": n}

    @app.get("/", response_class=HTMLResponse)
    def stations_page() -> str:
        return _page("Stations", STATIONS_JS)

    @app.get("/trace", response_class=HTMLResponse)
    def trace_page() -> str:
        return _page("Trace", TRACE_JS)

    @app.get("/couriers", response_class=HTMLResponse)
    def couriers_page() -> str:
        return _page("Couriers", COURIERS_JS)

    return app


async def _read_images(request: Request) -> list[bytes]:
    """The photos of an enrolment request, size-capped before anything decodes them."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_ENROL_BODY:
        raise HTTPException(413, "the photos are larger than 5 x 8 MiB")
    raw = bytearray()
    async for chunk in request.stream():
        raw.extend(chunk)
        if len(raw) > MAX_ENROL_BODY:
            raise HTTPException(413, "the photos are larger than 5 x 8 MiB")
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("image/"):
        images = [bytes(raw)]
    else:
        try:
            body = json.loads(raw)
            items = body["images"]
            if not isinstance(items, list) or not 1 <= len(items) <= 5:
                raise ValueError
            images = [base64.b64decode(item, validate=True) for item in items]
        # RecursionError: JSON nested deeper than the parser goes (a hostile body, not a 500)
        except (ValueError, KeyError, TypeError, binascii.Error, RecursionError):
            raise HTTPException(422, 'send one image (image/jpeg, image/png) or {"images": [1-5 base64 photos]}') \
                from None
    if not all(images):
        raise HTTPException(422, "a photo is empty")
    return images


def _page(title: str, script: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Fleet · {title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{font:14px system-ui,sans-serif;margin:1rem 2rem;color:#222}}
nav a{{margin-right:1rem}} table{{border-collapse:collapse;width:100%;margin-top:1rem}}
th,td{{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}}
tr.alarm td{{background:#fff1f0}} .off{{color:#a00}} .on{{color:#070}} code{{font-size:12px}}
#login{{margin:1rem 0}} #err{{color:#a00}}
</style></head><body>
<nav><a href="/">Stations</a><a href="/trace">Trace</a><a href="/couriers">Couriers</a>
<span id="login"><input id="token" size="50" placeholder="fleet operator token">
<button id="save">Log in</button></span></nav>
<h1>{title}</h1><div id="err"></div><div id="main"></div>
<script>
const $ = (id) => document.getElementById(id);
$("token").value = sessionStorage.getItem("fleet-token") || "";
$("save").onclick = () => {{ sessionStorage.setItem("fleet-token", $("token").value.trim()); load(); }};
async function api(path) {{
  const r = await fetch(path, {{headers: {{Authorization: "Bearer " + (sessionStorage.getItem("fleet-token") || "")}}}});
  const body = await r.json().catch(() => ({{}}));
  if (!r.ok) throw new Error(body.detail || r.statusText);
  return body;
}}
function cell(tr, text, cls) {{ const td = document.createElement("td"); td.textContent = text ?? "";
  if (cls) td.className = cls; tr.appendChild(td); return td; }}
function table(headers) {{ const t = document.createElement("table"); const h = t.insertRow();
  for (const x of headers) {{ const th = document.createElement("th"); th.textContent = x; h.appendChild(th); }}
  return t; }}
{script}
load();
</script></body></html>"""


STATIONS_JS = """
async function load() {
  $("err").textContent = "";
  let data;
  try { data = await api("/api/stations"); } catch (e) { $("err").textContent = e.message; return; }
  const t = table(["station", "state", "last seen", "lag (s)", "chain", "open alarms", "fleet alarms",
                   "parcels on shelves", "console"]);
  for (const s of data.stations) {
    const tr = t.insertRow();
    if (s.fleet_alarms || s.open_alarms) tr.className = "alarm";
    cell(tr, s.station);
    cell(tr, s.online ? "online" : "offline", s.online ? "on" : "off");
    cell(tr, s.last_seen);
    cell(tr, s.lag_s == null ? "" : s.lag_s.toFixed(2));
    cell(tr, "verified to " + s.verified_seq + (s.gap ? ", gap " + s.gap[0] + "-" + s.gap[1] : ""));
    cell(tr, s.open_alarms);
    cell(tr, s.fleet_alarms);
    cell(tr, s.occupancy);
    const td = cell(tr, "");
    if (s.console_url && /^https?:\\/\\//.test(s.console_url)) {
      const a = document.createElement("a"); a.href = s.console_url; a.textContent = "open"; td.appendChild(a);
    }
  }
  $("main").replaceChildren(t);
}
setInterval(load, 10000);
"""

TRACE_JS = """
const form = document.createElement("form");
form.innerHTML = '<input id="q" size="40" placeholder="waybill, parcel id or courier id"> ' +
                 '<input id="phone" size="16" placeholder="or phone"> <button>Trace</button> <span id="took"></span>';
document.querySelector("h1").after(form);
form.onsubmit = (e) => { e.preventDefault(); load(); };
async function load() {
  const q = $("q").value.trim(), phone = $("phone").value.trim();
  if (!q && !phone) return;
  $("err").textContent = "";
  let data;
  const params = new URLSearchParams(phone ? {phone} : {q});
  try { data = await api("/api/trace?" + params); } catch (e) { $("err").textContent = e.message; return; }
  $("took").textContent = data.events.length + " events, " + data.took_ms + " ms";
  const t = table(["time (UTC)", "station", "seq", "event", "actor", "subject", "snapshot", "data"]);
  for (const e of data.events) {
    const tr = t.insertRow();
    cell(tr, e.ts); cell(tr, e.station); cell(tr, e.seq); cell(tr, e.type); cell(tr, e.actor);
    cell(tr, e.subject);
    const td = cell(tr, "");
    if (e.snapshot) {
      if (e.console_url && /^https?:\\/\\//.test(e.console_url)) {
        const a = document.createElement("a");
        a.href = e.console_url.replace(/\\/$/, "") + "/api/operator/snapshots/" + encodeURIComponent(e.snapshot);
        a.textContent = e.snapshot.slice(0, 12); td.appendChild(a);
      } else td.textContent = e.snapshot.slice(0, 12);
    }
    const code = document.createElement("code"); code.textContent = e.data; cell(tr, "").appendChild(code);
  }
  $("main").replaceChildren(t);
}
"""

COURIERS_JS = """
const filter = document.createElement("input");
filter.id = "filter"; filter.size = 30; filter.placeholder = "filter: carrier, name, id or station";
filter.setAttribute("aria-label", "filter the couriers");
document.querySelector("h1").after(filter);
let couriers = [];
filter.oninput = () => render();
function day(t) { return t == null ? "" : new Date(t * 1000).toISOString().slice(0, 16).replace("T", " "); }
function render() {
  const f = filter.value.trim().toLowerCase();
  const t = table(["courier", "carrier", "name", "state", "valid from (UTC)", "valid until (UTC)",
                   "stations", "face enrolled"]);
  t.id = "couriers";
  let shown = 0;
  for (const c of couriers) {
    const text = [c.id, c.carrier, c.name, ...c.stations].join(" ").toLowerCase();
    if (f && !text.includes(f)) continue;
    const tr = t.insertRow();
    tr.dataset.courier = c.id;
    cell(tr, c.id); cell(tr, c.carrier); cell(tr, c.name);
    cell(tr, c.active ? "active" : "disabled", c.active ? "on" : "off");
    cell(tr, day(c.valid_from)); cell(tr, day(c.valid_until));
    cell(tr, c.stations.join(", "));
    cell(tr, c.face_enrolled ? "yes" : "no");
    shown++;
  }
  const count = document.createElement("p");
  count.id = "count"; count.textContent = shown + " of " + couriers.length + " couriers";
  $("main").replaceChildren(count, t);
}
async function load() {
  $("err").textContent = "";
  try { couriers = (await api("/api/couriers")).couriers; } catch (e) { $("err").textContent = e.message; return; }
  render();
}
"""
