"""Who is calling: the three roles operator, courier, kiosk (a kiosk or door device).

- An operator holds a server-side session (flows/accounts.py, ADR 0130): its random id in the
  `ps_session` cookie (the console page) or as a bearer token (scripts); the operator's
  account says whether they are a `viewer` or an `admin`.
- A kiosk screen holds the long-lived device credential it got by pairing (`psk1.` bearer).
- A courier holds a stateless token `ps1.courier.<id>.<expires>.<mac>`, an HMAC with the
  station's token key, from the PIN login (ADR 0004). The same stateless form for operators
  and kiosks (`station token create`) is accepted only with `[api] service_tokens = true`.

No credential is ever taken from a URL."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import cookie_parser

ROLES = ("operator", "courier", "kiosk")
SESSION_COOKIE = "ps_session"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
BACKGROUND_HEADER = "x-ps-background"
_SUBJECT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class TokenError(Exception):
    pass


@dataclass(frozen=True)
class Principal:
    role: str
    subject: str
    # for operators: "viewer" or "admin" (a stateless service token is an admin)
    level: str = "admin"
    # how the caller proved it: "token" (stateless), "session" (bearer session id),
    # "cookie" (session cookie: the one a browser sends by itself, so CSRF-checked), "device"
    via: str = "token"
    session: str | None = None  # the session's handle (not its id)


def _mac(key: bytes, body: str) -> str:
    digest = hmac.new(key, body.encode(), hashlib.sha256).digest()[:18]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def make_token(key: bytes, role: str, subject: str, ttl_s: float, now: float | None = None) -> str:
    if role not in ROLES:
        raise TokenError(f"role is one of {', '.join(ROLES)}")
    if not _SUBJECT.match(subject):
        raise TokenError("subject: 1-64 letters, digits, - or _")
    expires = int((now or time.time()) + ttl_s)
    body = f"ps1.{role}.{subject}.{expires}"
    return f"{body}.{_mac(key, body)}"


def read_token(key: bytes, token: str, now: float | None = None) -> Principal:
    parts = token.split(".")
    if len(parts) != 5 or parts[0] != "ps1":
        raise TokenError("malformed token")
    body = ".".join(parts[:4])
    if not hmac.compare_digest(_mac(key, body), parts[4]):
        raise TokenError("token signature does not match")
    role, subject, expires = parts[1], parts[2], parts[3]
    if role not in ROLES or not expires.isdigit():
        raise TokenError("malformed token")
    if int(expires) < (now or time.time()):
        raise TokenError("token expired")
    return Principal(role, subject)


class AuthError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class AccountsPort(Protocol):
    def session(self, session_id: str, *, touch: bool = True) -> Any: ...

    def kiosk(self, credential: str) -> str | None: ...


class Authenticator:
    """Turns a request's headers into a Principal or an AuthError: used once per request,
    by the edge (app.TokenFirst), before the body is read."""

    def __init__(self, token_key: bytes, accounts: AccountsPort | None, service_tokens: bool) -> None:
        self.token_key = token_key
        self.accounts = accounts
        self.service_tokens = service_tokens

    def authenticate(self, headers: Headers, path: str = "") -> Principal:
        # a page's own timers (and the event stream) say so: they keep no session alive
        background = headers.get(BACKGROUND_HEADER) == "1" or path == "/api/operator/stream"
        header = headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if token:
            return self._bearer(token, background)
        session_id = cookie_parser(headers.get("cookie", "")).get(SESSION_COOKIE, "")
        if session_id:
            return self._session(session_id, "cookie", background)
        raise AuthError(401, "unauthenticated", "a bearer token or an operator session is required")

    def _bearer(self, token: str, background: bool) -> Principal:
        if token.startswith("pso1."):
            return self._session(token, "session", background)
        if token.startswith("psk1."):
            device = self.accounts.kiosk(token) if self.accounts is not None else None
            if device is None:
                raise AuthError(401, "invalid_token", "this kiosk credential is unknown or revoked")
            return Principal("kiosk", device, via="device")
        try:
            principal = read_token(self.token_key, token)
        except TokenError as exc:
            raise AuthError(401, "invalid_token", str(exc)) from None
        if principal.role != "courier" and not self.service_tokens:
            raise AuthError(401, "invalid_token", "service tokens are off at this station: operators log in,"
                            " kiosk screens pair ([api] service_tokens)")
        return principal

    def _session(self, session_id: str, via: str, background: bool = False) -> Principal:
        info = self.accounts.session(session_id, touch=not background) if self.accounts is not None else None
        if info is None:
            raise AuthError(401, "session_ended", "this session has ended: log in again")
        return Principal("operator", info.operator_id, level=info.role, via=via, session=info.handle)


def principal_from(request: Request) -> Principal:
    """The principal the edge authenticated (app.TokenFirst), else authenticate here."""
    found = getattr(request.state, "principal", None)
    if isinstance(found, Principal):
        return found
    auth: Authenticator = request.app.state.authenticator
    return auth.authenticate(request.headers, request.url.path)


def require(*roles: str, admin: bool = False) -> Callable[[Request], Awaitable[Principal]]:
    """FastAPI dependency: the caller must hold one of `roles` (an operator with `admin`
    must be an admin; a viewer gets 403).

    A coroutine, so that FastAPI runs it on the event loop: a plain `def` dependency is sent
    to the thread pool and back, and with `services` beside it every request made three
    thread hand-offs instead of one (the station's largest per-request cost in the week
    slice's profile). The principal is normally the one the edge already authenticated
    (app.TokenFirst); only the fallback, which may read the store, goes to a thread."""

    async def dependency(request: Request) -> Principal:
        found = getattr(request.state, "principal", None)
        principal = found if isinstance(found, Principal) else await run_in_threadpool(principal_from, request)
        if principal.role not in roles:
            raise AuthError(403, "forbidden", f"this needs the {' or '.join(roles)} role")
        if admin and principal.role == "operator" and principal.level != "admin":
            raise AuthError(403, "forbidden", "this needs an admin operator")
        return principal

    dependency.__name__ = f"require_{'_'.join(roles)}{'_admin' if admin else ''}"
    return dependency
