"""Bearer tokens for the three roles: operator, courier, kiosk (a kiosk or door device).

A token is `ps1.<role>.<subject>.<expires>.<mac>`, an HMAC with the station's token key:
stateless, so a restart logs nobody out, and nothing to store. Couriers get theirs by PIN;
operators and kiosks from `station token create`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request

ROLES = ("operator", "courier", "kiosk")
_SUBJECT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class TokenError(Exception):
    pass


@dataclass(frozen=True)
class Principal:
    role: str
    subject: str


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


def principal_from(request: Request, key: bytes) -> Principal:
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    if not token:
        token = request.cookies.get("ps_token", "")
    if not token:
        raise AuthError(401, "unauthenticated", "a bearer token is required")
    try:
        return read_token(key, token)
    except TokenError as exc:
        raise AuthError(401, "invalid_token", str(exc)) from None


def require(*roles: str) -> Callable[[Request], Principal]:
    """FastAPI dependency: the caller must hold one of `roles`."""

    def dependency(request: Request) -> Principal:
        key: bytes = request.app.state.token_key
        principal = principal_from(request, key)
        if principal.role not in roles:
            raise AuthError(403, "forbidden", f"this needs the {' or '.join(roles)} role")
        return principal

    dependency.__name__ = f"require_{'_'.join(roles)}"
    return dependency
