"""Courier bundles from the fleet (#20.2, ADR 0131): the format, its checks, and applying one.

The fleet keeps the courier registry and publishes each station the part that concerns it,
retained on `ps/v1/<station>/fleet/couriers`. A bundle is JSON:

    {"v": 1, "station": ID, "version": N, "issued_at": T, "eph": b64, "nonce": b64,
     "body": b64, "sig": b64}

`body` is AES-256-GCM under a key agreed by X25519 between a one-off fleet key (`eph`) and
the station's bundle key (derived from its `encryption_key`, so no new secret), with the
station id and version as associated data: PIN hashes and face templates are readable by
that station only, never on the broker. `sig` is Ed25519 by a fleet key the station trusts
(`[bundles] trusted_keys`, old and new while the fleet rolls its key, ADR 0133) over every
other field; `kid` (outside the signature: a hint, never trusted by itself) names the key
that signed, so a station can say which key it was given and does not trust. The station refuses an unsigned, forged,
foreign (another station's), older or replayed bundle, and applies a good one in one
transaction; while the fleet is away it keeps the couriers of the last good one.

A bundle never overwrites a local courier (one added with the station's own CLI or API):
the local entry wins, and the conflict is an event and an alarm (ADR 0131).

The format functions (`seal_bundle`, `open_bundle`) are shared with fleet/bundles.py, as
the fleet uses the station's event format."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from station.crypto import derive_key
from station.store.eventlog import Event

log = logging.getLogger("station.bundles")
FORMAT = 1
MAX_BUNDLE_BYTES = 4 * 1024 * 1024


def bundle_topic(station_id: str) -> str:
    return f"ps/v1/{station_id}/fleet/couriers"


class BundleRefused(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class BundleCourier:
    id: str
    carrier: str
    name: str
    active: bool
    pin_hash: str  # argon2, as the fleet hashed it at enrolment
    valid_from: float | None = None
    valid_until: float | None = None
    faces: tuple[tuple[float, ...], ...] = ()  # 128-d encodings


@dataclass(frozen=True)
class Bundle:
    station: str
    version: int
    issued_at: float
    couriers: tuple[BundleCourier, ...]
    digest: str  # of the raw bundle: what the log names it by
    kid: str = ""  # the trusted key that verified it


# --- keys --------------------------------------------------------------------------------


def station_bundle_key(encryption_key: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(derive_key(encryption_key, "fleet-bundle-x25519"))


def public_hex(key: X25519PublicKey | Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def load_trusted(hex_key: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(hex_key))


def key_id(key: Ed25519PublicKey) -> str:
    """A fleet signing key's short name: 16 hex digits of SHA-256 of its raw bytes."""
    return hashlib.sha256(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).hexdigest()[:16]


def trusted_set(keys: Ed25519PublicKey | dict[str, Ed25519PublicKey] | list[Ed25519PublicKey]
                ) -> dict[str, Ed25519PublicKey]:
    """kid -> key, from one key, a list or a dict."""
    if isinstance(keys, dict):
        return keys
    return {key_id(k): k for k in ([keys] if isinstance(keys, Ed25519PublicKey) else keys)}


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: Any) -> bytes:
    if not isinstance(s, str):
        raise ValueError("not base64 text")
    return base64.b64decode(s, validate=True)


def _signed_part(doc: dict[str, Any]) -> bytes:
    return json.dumps({k: doc[k] for k in ("v", "station", "version", "issued_at", "eph", "nonce", "body")},
                      sort_keys=True, separators=(",", ":")).encode()


def _aead_key(shared: bytes, station: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"ps-bundle/v1/{station}".encode()).derive(shared)


def _aad(station: str, version: int) -> bytes:
    return f"ps-bundle/v1\0{station}\0{version}".encode()


def seal_bundle(station: str, version: int, issued_at: float, couriers: list[dict[str, Any]],
                station_public: X25519PublicKey, signer: Ed25519PrivateKey) -> bytes:
    """The fleet's side: seal the couriers for `station` and sign the whole."""
    eph = X25519PrivateKey.generate()
    key = _aead_key(eph.exchange(station_public), station)
    nonce = os.urandom(12)
    body = AESGCM(key).encrypt(nonce, json.dumps({"couriers": couriers}).encode(), _aad(station, version))
    doc: dict[str, Any] = {"v": FORMAT, "station": station, "version": version, "issued_at": issued_at,
                           "eph": _b64(public_bytes(eph.public_key())), "nonce": _b64(nonce), "body": _b64(body)}
    doc["sig"] = _b64(signer.sign(_signed_part(doc)))
    doc["kid"] = key_id(signer.public_key())
    return json.dumps(doc, sort_keys=True).encode()


def public_bytes(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def open_bundle(raw: bytes, *, station: str, trusted: Ed25519PublicKey | dict[str, Ed25519PublicKey],
                private: X25519PrivateKey) -> Bundle:
    """Check and open a bundle; BundleRefused says why not (unsigned, signed by a key this
    station does not trust, forged, foreign, bad)."""
    keys = trusted_set(trusted)
    if len(raw) > MAX_BUNDLE_BYTES:
        raise BundleRefused("too_large", f"bundle of {len(raw)} bytes")
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("v") != FORMAT:
            raise ValueError("not a bundle of format 1")
        if "sig" not in doc:
            raise BundleRefused("unsigned", "the bundle carries no signature")
        sig = _unb64(doc["sig"])
        signed = _signed_part(doc)
    except BundleRefused:
        raise
    except RecursionError:  # nested deeper than the parser goes: refused like any bad bundle
        raise BundleRefused("malformed", "not a courier bundle: JSON nested too deep") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleRefused("malformed", f"not a courier bundle: {exc}") from None
    kid = doc.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise BundleRefused("malformed", "kid must be a key id")
    if kid is not None and kid not in keys:
        raise BundleRefused("untrusted_key", f"the bundle is signed by fleet key {str(kid)[:16]!r}, which this"
                            f" station does not trust (it trusts {', '.join(sorted(keys))}; a rolled fleet key"
                            " goes into [bundles] trusted_keys)")
    verified = None
    for name, candidate in ([(kid, keys[kid])] if kid is not None else sorted(keys.items())):
        try:
            candidate.verify(sig, signed)
            verified = name
            break
        except InvalidSignature:
            continue
    if verified is None:
        raise BundleRefused("bad_signature", "the bundle's signature does not verify with the trusted fleet key"
                            f"{'s' if kid is None and len(keys) > 1 else ''} {kid or ', '.join(sorted(keys))}")
    if doc["station"] != station:
        raise BundleRefused("foreign", f"the bundle is for station {doc['station']!r}")
    version = doc["version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BundleRefused("malformed", "bundle version must be a positive integer")
    try:
        eph = X25519PublicKey.from_public_bytes(_unb64(doc["eph"]))
        key = _aead_key(private.exchange(eph), station)
        plain = AESGCM(key).decrypt(_unb64(doc["nonce"]), _unb64(doc["body"]), _aad(station, version))
        body = json.loads(plain)
        couriers = tuple(_courier(c) for c in body["couriers"])
    except InvalidTag:
        raise BundleRefused("sealed_for_another", "the bundle does not open with this station's key") from None
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise BundleRefused("malformed", f"bad bundle body: {exc}") from None
    return Bundle(station, version, float(doc["issued_at"]), couriers, hashlib.sha256(raw).hexdigest(), verified)


TEMPLATE_BYTES = 128 * 4


def encode_template(template: Any) -> str:
    """One 128-d encoding as it travels in a bundle: base64 of 128 little-endian float32
    (684 characters; a JSON list of the same numbers is about four times larger)."""
    import numpy as np

    row = np.asarray(template, dtype="<f4").reshape(-1)
    if row.shape != (128,) or not np.all(np.isfinite(row)):
        raise ValueError("a face template is 128 finite numbers")
    return _b64(row.tobytes())


def _face(f: Any) -> tuple[float, ...]:
    """A template from a bundle: base64 float32 (encode_template) or a list of 128 numbers."""
    if isinstance(f, str):
        import numpy as np

        raw = _unb64(f)
        if len(raw) != TEMPLATE_BYTES:
            raise ValueError("a face template is 128 float32")
        values = tuple(float(x) for x in np.frombuffer(raw, dtype="<f4"))
    else:
        values = tuple(float(x) for x in f)
    if len(values) != 128 or not all(v == v and abs(v) < 1e6 for v in values):
        raise ValueError("a face template is 128 finite numbers")
    return values


def _courier(c: dict[str, Any]) -> BundleCourier:
    faces = tuple(_face(f) for f in c.get("faces", ()))
    pin_hash = c["pin_hash"]
    if not isinstance(pin_hash, str) or not pin_hash.startswith("$argon2"):
        raise ValueError("pin_hash must be an argon2 hash")
    return BundleCourier(str(c["id"]), str(c["carrier"]), str(c["name"]), bool(c["active"]), pin_hash,
                         c.get("valid_from"), c.get("valid_until"), faces)


# --- applying ----------------------------------------------------------------------------


@dataclass
class Applied:
    version: int
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)


def current_version(store: Any) -> int:
    row = store.query_one("SELECT version FROM bundle_state WHERE kind = 'couriers'")
    return int(row["version"]) if row else 0


def apply_bundle(core: Any, bundle: Bundle) -> Applied:
    """One transaction: the fleet's couriers as the bundle says, local couriers untouched."""
    import numpy as np

    from station.flows import guard
    from station.vision.templates import TemplateCipher

    ctx = core.ctx
    seal = core.couriers.seal
    cipher = TemplateCipher(ctx.secrets.encryption_key)
    out = Applied(bundle.version)
    with ctx.lock, ctx.store.transaction() as tx:
        row = tx.execute("SELECT version FROM bundle_state WHERE kind = 'couriers'").fetchone()
        if row is not None and bundle.version <= int(row[0]):
            raise BundleRefused("replayed" if bundle.version == int(row[0]) else "older",
                                f"bundle version {bundle.version}, this station has {row[0]}")
        cols = ("id", "carrier", "name", "pin_hash", "active", "valid_from", "valid_until", "has_face", "source",
                "disabled_by")
        existing = {r[0]: dict(zip(cols, r, strict=True)) for r in tx.execute(
            f"SELECT {', '.join(cols)} FROM couriers").fetchall()}
        wanted = {c.id for c in bundle.couriers}
        for c in bundle.couriers:
            have = existing.get(c.id)
            if have is not None and have["source"] != "fleet":
                out.conflicts.append(c.id)
                continue
            if have is None:
                tx.emit(Event("courier.added", c.id, "fleet", {
                    "courier_id": c.id, "carrier": c.carrier, "name": c.name, "pin": "set",
                    "pin_sealed": seal.seal(c.id, c.pin_hash), "valid_from": c.valid_from,
                    "valid_until": c.valid_until, "source": "fleet", "bundle": bundle.version}))
                out.added.append(c.id)
                have = {"active": 1, "has_face": 0}
            else:
                changed = (have["carrier"], have["name"], have["valid_from"], have["valid_until"]) != (
                    c.carrier, c.name, c.valid_from, c.valid_until)
                if changed:
                    tx.emit(Event("courier.updated", c.id, "fleet", {
                        "courier_id": c.id, "carrier": c.carrier, "name": c.name, "valid_from": c.valid_from,
                        "valid_until": c.valid_until, "bundle": bundle.version}))
                if _opened(seal, c.id, have["pin_hash"]) != c.pin_hash:
                    tx.emit(Event("courier.pin.changed", c.id, "fleet", {
                        "courier_id": c.id, "pin": "changed", "pin_sealed": seal.seal(c.id, c.pin_hash)}))
                    changed = True
                if changed:
                    out.updated.append(c.id)
            held = c.active and not have["active"] and have.get("disabled_by") not in (None, "fleet")
            if held:  # disabled by this station's operator: a bundle does not lift that
                out.held.append(c.id)
            elif bool(have["active"]) != c.active:
                tx.emit(Event("courier.enabled" if c.active else "courier.disabled", c.id, "fleet",
                              {"courier_id": c.id, "bundle": bundle.version}))
                if c.id not in out.added and c.id not in out.updated:
                    out.updated.append(c.id)
            stored = _stored_faces(tx, cipher, c.id)
            wanted_faces = np.asarray(c.faces, dtype=np.float32).reshape(-1, 128)
            if c.faces and not (stored is not None and np.array_equal(stored, wanted_faces)):
                # enrolled (or enrolled again) at the fleet: the templates arrive in this
                # transaction with the bundle that carries them
                tx.execute("DELETE FROM face_templates WHERE courier_id = ?", (c.id,))
                for idx, face in enumerate(wanted_faces):
                    tx.execute("INSERT INTO face_templates(courier_id, idx, blob) VALUES (?,?,?)",
                               (c.id, idx, cipher.encrypt(face, c.id)))
                tx.emit(Event("courier.face.enrolled", c.id, "fleet",
                              {"courier_id": c.id, "templates": len(c.faces), "bundle": bundle.version}))
                if c.id not in out.added and c.id not in out.updated:
                    out.updated.append(c.id)
            elif not c.faces and (have["has_face"] or stored is not None):
                # the fleet forgot the face (re-enrolment pending, or the courier's wish)
                n = tx.execute("DELETE FROM face_templates WHERE courier_id = ?", (c.id,)).rowcount
                tx.emit(Event("courier.face.removed", c.id, "fleet",
                              {"courier_id": c.id, "face_templates_deleted": n, "bundle": bundle.version}))
                if c.id not in out.added and c.id not in out.updated:
                    out.updated.append(c.id)
        for cid, have in existing.items():
            if have["source"] == "fleet" and cid not in wanted:
                n = tx.execute("DELETE FROM face_templates WHERE courier_id = ?", (cid,)).rowcount
                tx.emit(Event("courier.removed", cid, "fleet", {"courier_id": cid, "face_templates_deleted": n}))
                out.removed.append(cid)
        tx.emit(Event("courier.bundle.applied", ctx.station_id, "fleet", {
            "version": bundle.version, "issued_at": bundle.issued_at, "digest": bundle.digest, "kid": bundle.kid,
            "added": out.added, "updated": out.updated, "removed": out.removed, "conflicts": out.conflicts,
            "held": out.held}))
        if out.conflicts:
            guard.raise_alarm(tx, "bundle.conflict", ctx.station_id,
                              "the fleet's bundle names couriers that are local here; the local entries"
                              f" win: {', '.join(out.conflicts)}", couriers=out.conflicts)
    return out


def _stored_faces(tx: Any, cipher: Any, courier_id: str) -> Any:
    """The (k, 128) templates this station holds for a courier, None when it holds none or
    they no longer decrypt (then the bundle's replace them)."""
    import numpy as np

    from station.vision.templates import TemplateError

    blobs = [r[0] for r in tx.execute("SELECT blob FROM face_templates WHERE courier_id = ? ORDER BY idx",
                                      (courier_id,)).fetchall()]
    if not blobs:
        return None
    try:
        return np.concatenate([cipher.decrypt(b, courier_id) for b in blobs])
    except TemplateError:
        return None


def _opened(seal: Any, courier_id: str, stored: str) -> str | None:
    from station.crypto import DecryptError

    try:
        return str(seal.open(courier_id, stored))
    except DecryptError:
        return None


def refuse(core: Any, reason: str, message: str, version: object = None, count: int = 1,
           interval_s: float | None = None) -> None:
    """A refused bundle is an event (what it claimed, never what it holds); `count` says how
    many refusals of this cause it stands for (RefusalLog)."""
    data: dict[str, Any] = {"reason": reason, "message": message[:200], "version": version, "count": count}
    if interval_s is not None:
        data["interval_s"] = interval_s
    with core.ctx.store.transaction() as tx:
        tx.emit(Event("courier.bundle.refused", core.ctx.station_id, "fleet", data))


@dataclass
class _Window:
    opened: float  # steady clock
    suppressed: int = 0
    message: str = ""
    version: object = None


class RefusalLog:
    """At most one `courier.bundle.refused` event (and one log line) per cause per interval,
    each with the number of refusals it stands for (ADR 0134).

    Anyone who can publish on the bundle topic can send refusals as fast as the broker
    carries them; written one by one they would grow the event log (and the card) without
    bound. The first refusal of a cause is written at once, so an operator sees it; the ones
    that follow within `interval_s` are counted; when the interval is over, the count goes
    into one event (at the next refusal of that cause, the listener's tick, or the station's
    stop), which opens the next interval. So over any stretch of T seconds a cause writes at
    most 1 + T / interval_s events, plus one at stop, and the counts add up to every refusal.
    The interval is on the steady clock: a stepped wall clock neither floods nor silences."""

    def __init__(self, core: Any, interval_s: float, clock: Any = None) -> None:
        import time

        self.core = core
        self.interval_s = interval_s
        self.clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}

    def refused(self, reason: str, message: str, version: object = None) -> bool:
        """Count one refusal; True when it was written as an event now."""
        with self._lock:
            now = self.clock()
            w = self._windows.get(reason)
            if w is not None and now - w.opened < self.interval_s:
                w.suppressed += 1
                w.message, w.version = message, version
                return False
            count = 1 + (w.suppressed if w is not None else 0)
            self._windows[reason] = _Window(now)
            self._write(reason, message, version, count)
            return True

    def flush(self, force: bool = False) -> int:
        """Write the counts of intervals that are over (all of them with `force`, at stop);
        returns how many events that wrote."""
        written = 0
        with self._lock:
            now = self.clock()
            for reason, w in list(self._windows.items()):
                if w.suppressed and (force or now - w.opened >= self.interval_s):
                    self._write(reason, w.message, w.version, w.suppressed)
                    self._windows[reason] = _Window(now)
                    written += 1
        return written

    def _write(self, reason: str, message: str, version: object, count: int) -> None:
        log.warning("courier bundle refused: %s (%s)%s", reason, message,
                    f"; {count} refusals of this cause since the last report" if count > 1 else "")
        refuse(self.core, reason, message, version, count, self.interval_s)


def receive(core: Any, raw: bytes, *, trusted: Ed25519PublicKey | dict[str, Ed25519PublicKey],
            private: X25519PrivateKey, refusals: RefusalLog | None = None) -> Applied | None:
    """What the listener does with one message: open, apply, or record the refusal (through
    `refusals`, the rate-limited log, when given; one event each otherwise)."""
    try:
        bundle = open_bundle(raw, station=core.ctx.station_id, trusted=trusted, private=private)
        return apply_bundle(core, bundle)
    except BundleRefused as exc:
        if exc.reason != "replayed":  # the retained copy again after a reconnect: nothing new
            if refusals is not None:
                refusals.refused(exc.reason, str(exc))
            else:
                log.warning("courier bundle refused: %s (%s)", exc.reason, exc)
                refuse(core, exc.reason, str(exc))
        return None


class BundleListener:
    """Subscribes to this station's bundle topic on the fleet broker ([upstream] host, port,
    credentials, TLS) and applies what arrives; paho reconnects by itself, and the retained
    bundle arrives again on every connect, so a station back online catches up at once."""

    def __init__(self, core: Any, config: Any, secrets: Any) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from station.upstream import fleet_password, fleet_tls_context

        self.core = core
        up = config.upstream
        self.trusted = {key_id(k): k for k in (load_trusted(h) for h in config.bundles.trusted)}
        self.private = station_bundle_key(secrets.encryption_key)
        self.topic = bundle_topic(config.station.id)
        self._lock = threading.Lock()
        client_id = f"{up.client_id or config.station.id}-bundles"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        # the forwarder's login and TLS, from the same functions (upstream.py)
        if up.username:
            self.client.username_pw_set(up.username, fleet_password(config, secrets))
        ctx = fleet_tls_context(config)
        if ctx is not None:
            self.client.tls_set_context(ctx)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(self.topic, qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 10)
        self.host, self.port = up.host, up.port
        self.refusals = RefusalLog(core, config.bundles.refused_log_interval_s)
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            try:
                receive(self.core, bytes(msg.payload), trusted=self.trusted, private=self.private,
                        refusals=self.refusals)
            except Exception:  # a bad bundle must never stop the listener
                log.exception("courier bundle: not applied")

    def _tick(self) -> None:
        """Writes the count of a flood that has stopped, once its interval is over."""
        every = min(max(self.refusals.interval_s / 4, 0.5), 30.0)
        while not self._stop.wait(every):
            try:
                self.refusals.flush()
            except Exception:  # noqa: BLE001 - a failed write is retried at the next tick
                log.exception("courier bundle: refusal count not written")

    def start(self) -> BundleListener:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self._ticker = threading.Thread(target=self._tick, name="bundle-refusals", daemon=True)
        self._ticker.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.client.loop_stop()
        if self._ticker is not None:
            self._ticker.join(5)
        try:
            self.refusals.flush(force=True)  # the counts of an interval still open
        except Exception:  # noqa: BLE001 - stopping anyway
            log.exception("courier bundle: refusal count not written at stop")
        try:
            self.client.disconnect()
        except Exception:  # noqa: BLE001 - stopping anyway
            pass
