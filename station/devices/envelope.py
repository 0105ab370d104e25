"""The wire envelope shared by the station and the firmware: canonical bytes, HMAC, topics.

Pure standard library on purpose: `firmware_stubs` imports this module and nothing else from
`station/`, so a device image needs no pydantic and no paho beyond its MQTT client.

Every JSON message except `avail` carries `sig`: HMAC-SHA256 (hex) over the canonical bytes
(sorted keys, no spaces, UTF-8) of the message without `sig`, keyed with the device's own key
(derived from the station master key, see `derive_device_key`). Each message also carries `t`
(cmd|ack|evt|state) inside the signed bytes so a signature over one kind can never be
reflected as another kind.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import math
import secrets
import time
from pathlib import Path
from typing import Any

VERSION = 1
TOPIC_ROOT = "ps/v1"
MAX_PAYLOAD = 64 * 1024  # bytes; anything larger is refused before parsing
CHANNELS = ("cmd", "ack", "state", "evt", "avail")
ONLINE = "online"
OFFLINE = "offline"

# Reasons a device refuses a command (negative ack + `command.refused` evt).
REFUSAL_REASONS = (
    "unsigned",
    "bad_signature",
    "expired",
    "replayed",
    "wrong_device",
    "no_trusted_time",
    "clock_skew",
    "malformed",
    "unknown_op",
    "too_large",
)

CMD_FIELDS = ("v", "t", "msg_id", "cmd_id", "device", "seq", "issued_at", "expires_at", "mono", "op",
              "args")
MONO_FIELDS = ("epoch", "issued", "expires")


class EnvelopeError(ValueError):
    """A payload that cannot be accepted; `reason` is one of REFUSAL_REASONS."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# --- keys, canonical bytes, signatures ------------------------------------------------------


def derive_device_key(master_key: bytes, station_id: str, device_id: str) -> bytes:
    """Per-device HMAC key; identical to `station.config.Secrets.device_key` (a contract test
    holds them together). A device is provisioned with only its own derived key."""
    msg = f"ps-device-key/v1/{station_id}/{device_id}".encode()
    return hmac.new(master_key, msg, hashlib.sha256).digest()


def canonical_bytes(obj: dict[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8, no NaN: the same bytes on every implementation."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def signature(obj: dict[str, Any], key: bytes) -> str:
    """Hex HMAC-SHA256 over the canonical bytes of `obj` minus any `sig` field."""
    body = {k: v for k, v in obj.items() if k != "sig"}
    return hmac.new(key, canonical_bytes(body), hashlib.sha256).hexdigest()


def sign(obj: dict[str, Any], key: bytes) -> dict[str, Any]:
    """A copy of `obj` with `sig` set."""
    out = {k: v for k, v in obj.items() if k != "sig"}
    out["sig"] = signature(out, key)
    return out


def check_signature(obj: dict[str, Any], key: bytes) -> None:
    """Raise EnvelopeError('unsigned'|'bad_signature') unless `obj['sig']` is right."""
    sig = obj.get("sig")
    if sig is None or sig == "":
        raise EnvelopeError("unsigned")
    if not isinstance(sig, str) or not hmac.compare_digest(sig, signature(obj, key)):
        raise EnvelopeError("bad_signature")


def encode(obj: dict[str, Any]) -> bytes:
    """Wire bytes of a message (the canonical form, so what is signed is what is sent)."""
    return canonical_bytes(obj)


def decode(payload: bytes) -> dict[str, Any]:
    """Size check first, then JSON; raises EnvelopeError('too_large'|'malformed')."""
    if len(payload) > MAX_PAYLOAD:
        raise EnvelopeError("too_large", f"{len(payload)} bytes > {MAX_PAYLOAD}")
    try:
        obj = json.loads(payload.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise EnvelopeError("malformed", f"not JSON: {exc}"[:200]) from None
    if not isinstance(obj, dict):
        raise EnvelopeError("malformed", "not a JSON object")
    if b"\\u" not in payload and payload.count(b"[") + payload.count(b"{") < 64:
        # valid UTF-8 carries no surrogate, so only a \u escape can name one, and a message
        # with fewer brackets than that cannot nest deeply: the check below (a whole second
        # serialisation of every device message) has nothing to find
        return obj
    try:  # a JSON escape may name a lone surrogate ("\\ud800"): no UTF-8 bytes can carry it,
        # so it could neither be signed nor stored; refuse it here, not deep in a handler
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise EnvelopeError("malformed", "invalid unicode (a lone surrogate)") from None
    except (RecursionError, ValueError):
        raise EnvelopeError("malformed", "nested too deeply") from None
    return obj


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


def new_id() -> str:
    """128-bit random hex id (msg_id, cmd_id, boot nonce)."""
    return secrets.token_hex(16)


@functools.cache
def host_clock_epoch() -> str:
    """Names this machine's monotonic clock: it starts again at every kernel boot, so a reading
    means something only with the boot it belongs to (docs/adr/0090). The same id as
    `station.clocks.current_boot_id`, read here because the firmware imports nothing else from
    `station/`. A platform without a boot id gets one per process, which only costs a
    time.sync after a restart."""
    try:
        text = Path("/proc/sys/kernel/random/boot_id").read_text("ascii").strip()
    except (OSError, UnicodeDecodeError):
        text = ""
    return text[:64] if text else _PROCESS_EPOCH


_PROCESS_EPOCH = f"proc-{secrets.token_hex(8)}"


# --- topics -------------------------------------------------------------------------------


def topic(station_id: str, device_id: str, channel: str) -> str:
    """`ps/v1/{station}/{device}/{channel}`."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    return f"{TOPIC_ROOT}/{station_id}/{device_id}/{channel}"


def parse_topic(name: str) -> tuple[str, str, str] | None:
    """(station, device, channel) of a device topic, or None for anything else."""
    parts = name.split("/")
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT or parts[4] not in CHANNELS:
        return None
    return parts[2], parts[3], parts[4]


# --- commands -----------------------------------------------------------------------------


def build_command(
    *,
    key: bytes,
    device: str,
    seq: int,
    op: str,
    args: dict[str, Any],
    ttl_s: float,
    cmd_id: str | None = None,
    msg_id: str | None = None,
    issued_at: float | None = None,
    expires_at: float | None = None,
    epoch: str | None = None,
    mono_issued: float | None = None,
    mono_expires: float | None = None,
) -> dict[str, Any]:
    """A signed command. A retry passes the same cmd_id, seq and stamps and a new msg_id, so
    the device runs it at most once and never after its expiry.

    `mono` is what the device judges expiry on (docs/adr/0090): the station's monotonic clock
    (`epoch` names which one) at issue and at expiry; it defaults to this host's clock.
    `issued_at`/`expires_at` are the station's wall clock, for people and for the device's
    reported time, never for deciding whether a command may run.
    """
    issued = time.time() if issued_at is None else issued_at
    m_issued = time.monotonic() if mono_issued is None else mono_issued
    cmd = {
        "v": VERSION,
        "t": "cmd",
        "msg_id": msg_id or new_id(),
        "cmd_id": cmd_id or new_id(),
        "device": device,
        "seq": int(seq),
        "issued_at": round(issued, 6),
        "expires_at": round(issued + ttl_s if expires_at is None else expires_at, 6),
        "mono": {
            "epoch": host_clock_epoch() if epoch is None else epoch,
            "issued": round(m_issued, 6),
            "expires": round(m_issued + ttl_s if mono_expires is None else mono_expires, 6),
        },
        "op": op,
        "args": args,
    }
    return sign(cmd, key)


def _is_num(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_command(payload: bytes, key: bytes) -> dict[str, Any]:
    """Decode and authenticate a command; raises EnvelopeError with the refusal reason.

    Order: size, JSON, shape, signature. Device, replay and expiry checks need device state
    and are the caller's (see `firmware_stubs.base`).
    """
    obj = decode(payload)
    if "sig" not in obj or obj.get("sig") in (None, ""):
        raise EnvelopeError("unsigned")
    for name in CMD_FIELDS:
        if name not in obj:
            raise EnvelopeError("malformed", f"missing {name}")
    extra = set(obj) - set(CMD_FIELDS) - {"sig"}
    if extra:
        raise EnvelopeError("malformed", f"unknown field {min(extra)}")
    if obj["v"] != VERSION or obj["t"] != "cmd":
        raise EnvelopeError("malformed", "wrong version or type")
    for name in ("msg_id", "cmd_id", "device", "op"):
        if not isinstance(obj[name], str) or not 0 < len(obj[name]) <= 64:
            raise EnvelopeError("malformed", f"{name} must be a short string")
    if not isinstance(obj["seq"], int) or isinstance(obj["seq"], bool) or obj["seq"] < 0:
        raise EnvelopeError("malformed", "seq must be a non-negative integer")
    if not _is_num(obj["issued_at"]) or not _is_num(obj["expires_at"]):
        raise EnvelopeError("malformed", "issued_at/expires_at must be numbers")
    if not isinstance(obj["args"], dict):
        raise EnvelopeError("malformed", "args must be an object")
    mono = obj["mono"]
    if not isinstance(mono, dict) or set(mono) != set(MONO_FIELDS):
        raise EnvelopeError("malformed", f"mono must have exactly {', '.join(MONO_FIELDS)}")
    if not isinstance(mono["epoch"], str) or not 0 < len(mono["epoch"]) <= 64:
        raise EnvelopeError("malformed", "mono.epoch must be a short string")
    if not _is_num(mono["issued"]) or not _is_num(mono["expires"]):
        raise EnvelopeError("malformed", "mono.issued/mono.expires must be numbers")
    check_signature(obj, key)
    return obj


# --- device -> station messages -----------------------------------------------------------


def build_ack(
    *,
    key: bytes,
    device: str,
    cmd_id: str,
    seq: int,
    boot_id: str,
    ok: bool,
    reason: str | None = None,
    result: dict[str, Any] | None = None,
    ts: float | None,
) -> dict[str, Any]:
    """A signed ack; `reason` is set exactly when ok is false."""
    ack: dict[str, Any] = {
        "v": VERSION,
        "t": "ack",
        "msg_id": new_id(),
        "cmd_id": cmd_id,
        "device": device,
        "ok": ok,
        "seq": seq,
        "boot_id": boot_id,
        "ts": ts,
        "result": result or {},
    }
    if not ok:
        ack["reason"] = reason or "malformed"
    return sign(ack, key)


def build_event(
    *,
    key: bytes,
    device: str,
    boot_id: str,
    evt_seq: int,
    kind: str,
    data: dict[str, Any],
    ts: float | None,
    uptime_s: float,
) -> dict[str, Any]:
    """A signed event; (boot_id, evt_seq) is unique, so the station drops redeliveries."""
    return sign(
        {
            "v": VERSION,
            "t": "evt",
            "msg_id": new_id(),
            "device": device,
            "boot_id": boot_id,
            "evt_seq": evt_seq,
            "ts": ts,
            "uptime_s": round(uptime_s, 3),
            "kind": kind,
            "data": data,
        },
        key,
    )


def build_state(
    *, key: bytes, device: str, boot_id: str, ts: float | None, uptime_s: float, body: dict[str, Any]
) -> dict[str, Any]:
    """A signed, retained full snapshot of what the device reports."""
    return sign(
        {
            "v": VERSION,
            "t": "state",
            "device": device,
            "boot_id": boot_id,
            "ts": ts,
            "uptime_s": round(uptime_s, 3),
            **body,
        },
        key,
    )
