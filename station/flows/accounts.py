"""Operator accounts, their server-side sessions, and paired kiosk screens (#20.1, ADR 0130).

An operator logs in with a password (argon2, sealed like a courier's PIN: flows/pins.py) and
gets a random session id; the station keeps only the id's keyed hash, so a copy of the
database or of the log cannot be replayed as a session. A session ends when it is idle for
`[operators] session_idle_s`, at the latest `session_max_s` after login, on logout, or when an
admin revokes it (one, or all of an operator's, or all); each end is an event, so the
sessions table is a projection like any other (DESIGN §3).

A kiosk screen pairs once: an admin creates a one-time pairing code for a device id (shown
once, short-lived), the screen trades it for a long-lived random credential, and the code is
consumed by the same statement that accepts it. Wrong passwords and wrong pairing codes are
counted by the station's lockout (flows/guard.py) before they are tested, so a burst of
parallel guesses tests no more of them than the policy allows (DESIGN §9).

Ages are measured on the steady clock (Stamp + age, ADR 0070)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets as pysecrets
import threading
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from station.clocks import Stamp, age
from station.crypto import DecryptError, Sealer
from station.store.eventlog import Event

from . import guard
from .context import Ctx
from .errors import AuthFailed, FlowError, NotFound

ROLES = ("viewer", "admin")
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_DEVICE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 256
SESSION_PREFIX = "pso1."
KIOSK_PREFIX = "psk1."
# pairing codes are typed on a kiosk screen: no 0/O, 1/I/L
PAIR_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
PAIR_LENGTH = 10  # 31^10 ~ 2^49.5
PAIRING_SCOPE = "kiosk-pairing"
_NOBODY = "\0no-operator"


@dataclass(frozen=True)
class OperatorView:
    id: str
    role: str
    active: bool
    sessions: int


@dataclass(frozen=True)
class SessionInfo:
    """Who a valid session belongs to; `handle` names the session without being its id."""

    operator_id: str
    role: str
    handle: str


@dataclass(frozen=True)
class NewSession:
    session_id: str  # the secret: goes to the browser's cookie, nowhere else
    info: SessionInfo


class _Seal:
    """An operator's password hash as the log carries it: sealed, bound to the operator id."""

    PREFIX = "sealed:v1:"

    def __init__(self, key: bytes) -> None:
        self._sealer = Sealer(key, "operator-password")

    def seal(self, operator_id: str, pw_hash: str) -> str:
        import base64

        return self.PREFIX + base64.b64encode(self._sealer.seal(pw_hash.encode(), f"operator/{operator_id}")).decode()

    def open(self, operator_id: str, stored: str) -> str:
        import base64
        import binascii

        if not stored.startswith(self.PREFIX):
            raise DecryptError("not a sealed password hash")
        try:
            blob = base64.b64decode(stored[len(self.PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            raise DecryptError("not a sealed password hash") from None
        return self._sealer.open(blob, f"operator/{operator_id}").decode()


class Accounts:
    def __init__(self, ctx: Ctx, hasher: PasswordHasher | None = None) -> None:
        self.ctx = ctx
        self.hasher = hasher or PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
        self.seal = _Seal(ctx.secrets.encryption_key)
        self._key = hmac.new(ctx.secrets.token_key, b"station/accounts/v1", hashlib.sha256).digest()
        self._dummy = self.seal.seal(_NOBODY, self.hasher.hash("no operator has this password"))
        # when each session's last use was written to `session_seen` (steady clock): a busy
        # console writes it a few times per idle period, not on every request
        self._touched: dict[str, float] = {}
        self._touch_lock = threading.Lock()

    # --- keyed hashes ---------------------------------------------------------------------

    def _hash(self, purpose: str, secret: str) -> str:
        return hmac.new(self._key, f"{purpose}\0{secret}".encode(), hashlib.sha256).hexdigest()

    # --- operators ------------------------------------------------------------------------

    def add(self, operator_id: str, role: str, password: str, *, actor: str) -> OperatorView:
        _check_id(operator_id)
        _check_role(role)
        _check_password(password)
        sealed = self.seal.seal(operator_id, self.hasher.hash(password))
        with self.ctx.lock, self.ctx.store.transaction() as tx:
            if tx.execute("SELECT 1 FROM operators WHERE id = ?", (operator_id,)).fetchone():
                raise FlowError(f"operator {operator_id} exists", code="operator_exists")
            tx.emit(Event("operator.added", operator_id, actor, {
                "operator_id": operator_id, "role": role, "password": "set", "password_sealed": sealed}))
        return self.get(operator_id)

    def get(self, operator_id: str) -> OperatorView:
        row = self.ctx.store.query_one("SELECT * FROM operators WHERE id = ?", (operator_id,))
        if row is None:
            raise NotFound(f"no operator {operator_id}")
        return self._view(row)

    def _view(self, row: dict[str, Any]) -> OperatorView:
        n = self.ctx.store.query_one("SELECT COUNT(*) AS n FROM operator_sessions WHERE operator_id = ?"
                                     " AND ended_at IS NULL", (row["id"],))["n"]
        return OperatorView(row["id"], row["role"], bool(row["active"]), int(n))

    def all(self) -> list[OperatorView]:
        return [self._view(r) for r in self.ctx.store.query("SELECT * FROM operators ORDER BY id")]

    def set_active(self, operator_id: str, active: bool, *, actor: str) -> OperatorView:
        """Disabling ends the operator's sessions in the same transaction."""
        with self.ctx.lock, self.ctx.store.transaction() as tx:
            if not tx.execute("SELECT 1 FROM operators WHERE id = ?", (operator_id,)).fetchone():
                raise NotFound(f"no operator {operator_id}")
            tx.emit(Event("operator.enabled" if active else "operator.disabled", operator_id, actor,
                          {"operator_id": operator_id}))
        return self.get(operator_id)

    def remove(self, operator_id: str, *, actor: str) -> None:
        with self.ctx.lock, self.ctx.store.transaction() as tx:
            if not tx.execute("SELECT 1 FROM operators WHERE id = ?", (operator_id,)).fetchone():
                raise NotFound(f"no operator {operator_id}")
            tx.emit(Event("operator.removed", operator_id, actor, {"operator_id": operator_id}))

    def change_password(self, operator_id: str, password: str, *, actor: str) -> OperatorView:
        """A new password ends the operator's sessions (a lost laptop stays logged out)."""
        _check_password(password)
        sealed = self.seal.seal(operator_id, self.hasher.hash(password))
        with self.ctx.lock, self.ctx.store.transaction() as tx:
            if not tx.execute("SELECT 1 FROM operators WHERE id = ?", (operator_id,)).fetchone():
                raise NotFound(f"no operator {operator_id}")
            tx.emit(Event("operator.password.changed", operator_id, actor, {
                "operator_id": operator_id, "password": "changed", "password_sealed": sealed}))
        return self.get(operator_id)

    # --- login and sessions ---------------------------------------------------------------

    def login(self, operator_id: str, password: str, *, client: str = "console") -> NewSession:
        """The guess is admitted (and counted) by the lockout before the password is tested;
        an unknown id costs one argon2 verify and one counted failure like a wrong password."""
        if not isinstance(operator_id, str) or not _ID.match(operator_id):
            operator_id = "-"
        scope = f"operator:{operator_id}"
        attempt = guard.admit(self.ctx, "password", scope, client, {"operator_id": operator_id})
        row = self.ctx.store.query_one("SELECT pw_hash, role, active FROM operators WHERE id = ?", (operator_id,))
        if row is not None:
            ok = self._verify(operator_id, row["pw_hash"], password)
        else:
            self._verify(_NOBODY, self._dummy, password)
            ok = False
        session_id = SESSION_PREFIX + pysecrets.token_urlsafe(32)
        key_hash = self._hash("session", session_id)
        handle = key_hash[:16]
        with self.ctx.lock, self.ctx.store.transaction() as tx:
            if not ok:
                guard.reject(self.ctx, tx, attempt, client, {"operator_id": operator_id})
            else:
                guard.accept(tx, attempt, client, {"operator_id": operator_id})
                current = tx.execute("SELECT role, active FROM operators WHERE id = ?", (operator_id,)).fetchone()
                if current is not None and current[1]:
                    tx.emit(Event("operator.login", operator_id, operator_id, {
                        "operator_id": operator_id, "role": current[0], "session": handle,
                        "key_hash": key_hash, "client": client, **self.ctx.stamp().as_data()}))
                    return NewSession(session_id, SessionInfo(operator_id, current[0], handle))
        if not ok:
            raise AuthFailed("wrong operator id or password", code="wrong_password")
        raise AuthFailed(f"operator {operator_id} is disabled", code="operator_disabled", status=403)

    def session(self, session_id: str, *, touch: bool = True) -> SessionInfo | None:
        """The session's owner, or None when it is unknown, ended, or idle/old (then it is
        ended here, with its event). A valid use is recorded as its last use, unless it is
        a page's own background refresh (`touch` False): a console left open on a lost
        laptop must idle out although it keeps polling."""
        if not session_id.startswith(SESSION_PREFIX) or len(session_id) > 100:
            return None
        key_hash = self._hash("session", session_id)
        row = self.ctx.store.query_one(
            "SELECT s.handle, s.operator_id, s.started_at, s.boot, s.mono, o.role, o.active,"
            " seen.at AS seen_at, seen.boot AS seen_boot, seen.mono AS seen_mono"
            " FROM operator_sessions s JOIN operators o ON o.id = s.operator_id"
            " LEFT JOIN session_seen seen ON seen.key_hash = s.key_hash"
            " WHERE s.key_hash = ? AND s.ended_at IS NULL", (key_hash,))
        if row is None or not row["active"]:
            return None
        now = self.ctx.stamp()
        cfg = self.ctx.config.operators
        started = Stamp(float(row["started_at"]), row["boot"] or "", float(row["mono"] or 0.0))
        last = started if row["seen_at"] is None else Stamp(
            float(row["seen_at"]), row["seen_boot"] or "", float(row["seen_mono"] or 0.0))
        if age(last, now) > cfg.session_idle_s or age(started, now) > cfg.session_max_s:
            reason = "idle" if age(last, now) > cfg.session_idle_s else "max_age"
            self._end(row["operator_id"], [row["handle"]], "operator.session.expired", "station", reason)
            return None
        if touch:
            self._touch(key_hash, now)
        return SessionInfo(row["operator_id"], row["role"], row["handle"])

    def _touch(self, key_hash: str, now: Stamp) -> None:
        every = min(5.0, self.ctx.config.operators.session_idle_s / 5)
        with self._touch_lock:
            if now.mono - self._touched.get(key_hash, float("-inf")) < every:
                return
            self._touched[key_hash] = now.mono
        with self.ctx.store.transaction() as tx:
            tx.execute("INSERT INTO session_seen(key_hash, at, boot, mono) VALUES (?,?,?,?)"
                       " ON CONFLICT(key_hash) DO UPDATE SET at = excluded.at, boot = excluded.boot,"
                       " mono = excluded.mono", (key_hash, now.wall, now.boot, now.mono))

    def _end(self, subject: str, handles: list[str], kind: str, actor: str, reason: str) -> int:
        with self.ctx.lock, self.ctx.store.transaction() as tx:
            marks = ",".join("?" * len(handles))
            live = [r[0] for r in tx.execute(
                f"SELECT handle FROM operator_sessions WHERE handle IN ({marks}) AND ended_at IS NULL",
                handles).fetchall()] if handles else []
            if not live:
                return 0
            tx.emit(Event(kind, subject, actor, {"sessions": live, "reason": reason}))
            tx.execute(f"DELETE FROM session_seen WHERE key_hash IN (SELECT key_hash FROM operator_sessions"
                       f" WHERE handle IN ({','.join('?' * len(live))}))", live)
        return len(live)

    def logout(self, info: SessionInfo) -> None:
        self._end(info.operator_id, [info.handle], "operator.logout", info.operator_id, "logout")

    def sessions(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.ctx.store.query(
            "SELECT s.handle, s.operator_id, o.role, s.started_at, seen.at AS last_seen FROM operator_sessions s"
            " JOIN operators o ON o.id = s.operator_id LEFT JOIN session_seen seen ON seen.key_hash = s.key_hash"
            " WHERE s.ended_at IS NULL ORDER BY s.started_at")]

    def revoke(self, handle: str, *, actor: str) -> int:
        row = self.ctx.store.query_one("SELECT operator_id FROM operator_sessions WHERE handle = ?"
                                       " AND ended_at IS NULL", (handle,))
        if row is None:
            raise NotFound(f"no open session {handle}")
        return self._end(row["operator_id"], [handle], "operator.session.revoked", actor, "revoked")

    def revoke_all(self, *, actor: str, operator_id: str | None = None) -> int:
        sql = "SELECT handle FROM operator_sessions WHERE ended_at IS NULL"
        args: tuple[Any, ...] = ()
        if operator_id:
            sql += " AND operator_id = ?"
            args = (operator_id,)
        handles = [r["handle"] for r in self.ctx.store.query(sql, args)]
        return self._end(operator_id or "*", handles, "operator.session.revoked", actor, "revoked_all")

    def _verify(self, owner: str, stored: str, password: object) -> bool:
        if not isinstance(password, str) or len(password) > MAX_PASSWORD:
            password = ""
        try:
            return bool(self.hasher.verify(self.seal.open(owner, stored), password))
        except (VerificationError, InvalidHashError, DecryptError):
            return False

    # --- kiosk screens --------------------------------------------------------------------

    def create_pairing(self, device_id: str, *, actor: str) -> str:
        """A one-time pairing code for `device_id`: returned once, never stored or logged."""
        if not _DEVICE.match(device_id or ""):
            raise FlowError("device id: 1-64 letters, digits, - or _", code="invalid_device_id", status=422)
        code = "".join(pysecrets.choice(PAIR_ALPHABET) for _ in range(PAIR_LENGTH))
        now = self.ctx.stamp()
        with self.ctx.lock, self.ctx.store.transaction() as tx:
            tx.execute("INSERT INTO pairing_codes(code_hash, device_id, created_at, boot, mono) VALUES (?,?,?,?,?)",
                       (self._hash("pair", code), device_id, now.wall, now.boot, now.mono))
            tx.emit(Event("kiosk.pairing.created", device_id, actor, {
                "device_id": device_id, "ttl_s": self.ctx.config.operators.pairing_ttl_s}))
        return code

    def pair(self, code: str, *, client: str = "kiosk") -> tuple[str, str]:
        """Trade a pairing code for the device's credential: (device id, credential).

        The guess is counted before it is tested; the code is consumed by the UPDATE that
        accepts it, so two screens racing with one code get one credential between them."""
        attempt = guard.admit(self.ctx, "pair", PAIRING_SCOPE, client, {})
        typed = code.strip().upper().replace("-", "").replace(" ", "") if isinstance(code, str) else ""
        code_hash = self._hash("pair", typed[:64])
        credential_secret = pysecrets.token_urlsafe(32)
        now = self.ctx.stamp()
        ttl = self.ctx.config.operators.pairing_ttl_s
        with self.ctx.lock, self.ctx.store.transaction() as tx:
            row = tx.execute("SELECT device_id, created_at, boot, mono FROM pairing_codes WHERE code_hash = ?"
                             " AND consumed_at IS NULL", (code_hash,)).fetchone()
            fresh = row is not None and age(Stamp(float(row[1]), row[2] or "", float(row[3] or 0.0)), now) <= ttl
            if fresh and tx.execute("UPDATE pairing_codes SET consumed_at = ? WHERE code_hash = ?"
                                    " AND consumed_at IS NULL", (now.wall, code_hash)).rowcount == 1:
                device_id = row[0]
                credential = f"{KIOSK_PREFIX}{device_id}.{credential_secret}"
                guard.accept(tx, attempt, client, {"device_id": device_id})
                tx.emit(Event("kiosk.paired", device_id, client, {
                    "device_id": device_id, "cred_hash": self._hash("kiosk", credential)}))
                return device_id, credential
            guard.reject(self.ctx, tx, attempt, client, {"expired": row is not None})
        raise AuthFailed("wrong or expired pairing code", code="wrong_pairing_code")

    def kiosk(self, credential: str) -> str | None:
        """The device id a kiosk credential belongs to, or None (unknown or revoked)."""
        if not credential.startswith(KIOSK_PREFIX) or len(credential) > 200:
            return None
        device_id = credential[len(KIOSK_PREFIX):].split(".", 1)[0]
        row = self.ctx.store.query_one("SELECT cred_hash FROM kiosk_devices WHERE id = ? AND active = 1",
                                       (device_id,))
        if row is None or not row["cred_hash"]:
            return None
        if not hmac.compare_digest(row["cred_hash"], self._hash("kiosk", credential)):
            return None
        return device_id

    def kiosks(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.ctx.store.query(
            "SELECT id, active, paired_at, revoked_at FROM kiosk_devices ORDER BY id")]

    def revoke_kiosk(self, device_id: str, *, actor: str) -> None:
        with self.ctx.lock, self.ctx.store.transaction() as tx:
            if not tx.execute("SELECT 1 FROM kiosk_devices WHERE id = ? AND active = 1", (device_id,)).fetchone():
                raise NotFound(f"no paired kiosk {device_id}")
            tx.emit(Event("kiosk.revoked", device_id, actor, {"device_id": device_id}))


def _check_id(operator_id: str) -> None:
    if not isinstance(operator_id, str) or not _ID.match(operator_id):
        raise FlowError("operator id: 1-32 letters, digits, ., - or _", code="invalid_operator_id", status=422)


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise FlowError(f"role is one of {', '.join(ROLES)}", code="invalid_role", status=422)


def _check_password(password: str) -> None:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise FlowError(f"a password is {MIN_PASSWORD}-{MAX_PASSWORD} characters", code="invalid_password",
                        status=422)
