"""The simulated people's HTTP: one kept-alive connection per person (a phone, a kiosk, a
handheld) on the standard library's `http.client`.

Why not httpx, as everywhere else in the simulator: a week makes about half a million
requests, and httpx spent 0.71 ms of CPU on each against 0.19 ms for a bare `http.client`
connection (2,000 JSON POSTs to a local server, 2026-12-02), in the process that also runs
every device's firmware; at the week's pace that was a tenth of the simulator's CPU. The
station's webhook sender made the same choice (ADR 0163). The calls mirror the part of
httpx's that the people use (`get`, `post`, `status_code`, `json()`), so a test can still
hand a person an `httpx.Client` on a mock transport."""

from __future__ import annotations

import http.client
import json as jsonlib
import select
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self


class HttpError(Exception):
    """The station could not be reached, or did not answer in time."""


@dataclass(frozen=True)
class Response:
    status_code: int
    content: bytes

    def json(self) -> Any:
        return jsonlib.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise HttpError(f"HTTP {self.status_code}: {self.text[:200]}")


# a connection the station closed while idle fails like this on reuse, before any answer
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
# sent again on a new connection after such a failure only if asking twice changes nothing:
# a POST the station may have read (an entry, an exit) is an error, never a second press
_IDEMPOTENT = frozenset({"GET", "HEAD"})
# a connection idle this long is not used again: uvicorn closes one idle for 5 s (its
# keep-alive), and a POST sent as it closes fails with a reset that must not be retried (a
# 5,000-parcel slice lost a customer's exit so on 2026-12-02). The readability check below
# sees only a close that has already arrived
MAX_IDLE_S = 3.0


class PersonHttp:
    """One person's connection to `base_url` (http only), opened on first use and again
    when the station has closed it; not for use by two threads at once."""

    def __init__(self, base_url: str, timeout: float = 15.0, max_idle_s: float = MAX_IDLE_S) -> None:
        url = urllib.parse.urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"not an http:// URL: {base_url!r}")
        self._host, self._port = url.hostname, url.port or 80
        self._prefix = url.path.rstrip("/")
        self._timeout = timeout
        self._max_idle_s = max_idle_s
        self._conn: http.client.HTTPConnection | None = None
        self._idle_since = 0.0  # monotonic time of the last answer on `_conn`

    def get(self, path: str, *, params: Mapping[str, Any] | None = None,
            headers: Mapping[str, str] | None = None, timeout: float | None = None) -> Response:
        if params:
            path = f"{path}?{urllib.parse.urlencode(params)}"
        return self.request("GET", path, None, headers, timeout)

    def post(self, path: str, *, json: Any = None, content: bytes | None = None,
             headers: Mapping[str, str] | None = None, timeout: float | None = None) -> Response:
        hdrs = dict(headers or {})
        if json is not None:
            content = jsonlib.dumps(json).encode()
            hdrs.setdefault("content-type", "application/json")
        return self.request("POST", path, content if content is not None else b"", hdrs, timeout)

    def request(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str] | None,
                timeout: float | None) -> Response:
        for attempt in (0, 1):
            conn, reused = self._connection()
            try:
                assert conn.sock is not None
                conn.sock.settimeout(self._timeout if timeout is None else timeout)
                conn.request(method, self._prefix + path, body=body, headers=dict(headers or {}))
                res = conn.getresponse()
                data = res.read()
            except _STALE as exc:
                self.close()
                if reused and attempt == 0 and method in _IDEMPOTENT:
                    continue  # closed by the station between our two requests: once more, anew
                raise HttpError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise HttpError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
            if res.will_close:
                self.close()
            self._idle_since = time.monotonic()
            return Response(res.status, data)
        raise AssertionError("unreachable")

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        conn = self._conn
        if (conn is not None and conn.sock is not None and not _readable(conn.sock)
                and time.monotonic() - self._idle_since < self._max_idle_s):
            return conn, True
        # readable while idle: the station closed it (or sent what nobody asked); or idle so
        # long that the station may be closing it right now
        self.close()
        conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            conn.connect()
        except OSError as exc:
            raise HttpError(f"cannot reach {self._host}:{self._port}: {exc}") from exc
        self._conn = conn
        return conn, False

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _readable(sock: Any) -> bool:
    ready, _, _ = select.select([sock], [], [], 0)
    return bool(ready)
