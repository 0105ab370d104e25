"""Station configuration: one TOML file, validated at the edge with pydantic.

Secrets never live in this file: they come from a separate secrets file or the environment
(`load_secrets`). A bad file is refused with a message naming the file, the key and the fault.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import re
import secrets as pysecrets
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SIZE_CLASSES = ("S", "M", "L", "XL")
SizeClass = Literal["S", "M", "L", "XL"]
ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"


class ConfigError(ValueError):
    """A configuration or secrets file that cannot be used; the message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class StationSection(_Strict):
    id: Annotated[str, Field(pattern=ID_PATTERN)]
    name: str = Field(min_length=1)
    address: str = ""
    database: str = "var/station.db"
    snapshots_dir: str = "var/snapshots"
    snapshots_enabled: bool = True
    retention_days: int = Field(default=7, ge=1, le=365)
    snapshot_retention_days: int = Field(default=30, ge=1, le=3650)
    placement_mode: Literal["guided", "free"] = "guided"
    # guided mode, parcel put in another slot: take the real slot, or ask the courier to move it
    guided_mismatch: Literal["accept", "ask_move"] = "accept"
    placement_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    # drop-offs open at once, so at most this many of the 8 customer colours (ADR 0076)
    dropoff_max_colours: int = Field(default=2, ge=1, le=4)
    pickup_session_timeout_s: float = Field(default=300.0, gt=0, le=7200)
    timezone: str = "Asia/Shanghai"


class MqttSection(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    # the password itself is a secret: name of the secrets entry / environment variable
    tls: bool = False
    ca_file: str | None = None
    keepalive_s: int = Field(default=30, ge=5, le=600)
    # keep the station's MQTT session at the broker, so device events sent while the
    # station restarts are delivered afterwards
    persistent_session: bool = True
    command_ttl_s: float = Field(default=10.0, gt=0, le=600)
    light_ttl_s: float = Field(default=600.0, gt=0, le=86400)
    # how often the shelves' signed counts are checked against the records (#22.4)
    shelf_audit_s: float = Field(default=30.0, ge=1, le=3600)
    # an unsigned "offline" is believed only after this long without a signed word from the
    # device (#14.6); further availability claims meanwhile are absorbed (#14.10)
    offline_confirm_s: float = Field(default=3.0, ge=0.1, le=300)


class ShelfConfig(_Strict):
    number: int = Field(ge=1, le=99)
    rows: int = Field(ge=1, le=9)
    columns: int = Field(ge=1, le=99)
    # size class of each row, top row first; one entry per row
    row_sizes: list[SizeClass]
    capacity: int = Field(default=2, ge=1, le=4)
    device: Annotated[str, Field(pattern=ID_PATTERN)]
    outbound: bool = False  # slots for parcels customers drop off for sending

    @model_validator(mode="after")
    def _row_sizes_match(self) -> ShelfConfig:
        if len(self.row_sizes) != self.rows:
            raise ValueError(
                f"row_sizes has {len(self.row_sizes)} entries but the shelf has {self.rows} rows"
            )
        return self


class DoorsConfig(_Strict):
    entry: Annotated[str, Field(pattern=ID_PATTERN)] = "door-entry"
    exit: Annotated[str, Field(pattern=ID_PATTERN)] = "door-exit"
    unlock_pulse_s: float = Field(default=5.0, gt=0, le=60)
    held_open_alarm_s: float = Field(default=60.0, gt=0, le=3600)


class CameraConfig(_Strict):
    id: Annotated[str, Field(pattern=ID_PATTERN)]
    role: Literal["face", "document", "room", "kiosk"]
    # device index ("0"), file path, rtsp:// or http(s):// URL, or sim:NAME for the simulator
    source: str
    # room cameras only: the shelf devices and doors this camera sees (the camera-to-shelf
    # map, docs/cameras.md); a take, put, door opening, alarm or exit decision there gets a
    # picture from every room camera that sees it
    sees: list[Annotated[str, Field(pattern=ID_PATTERN)]] = Field(default_factory=list, max_length=64)

    @model_validator(mode="after")
    def _sees_is_for_room(self) -> CameraConfig:
        if self.sees and self.role != "room":
            raise ValueError(f"camera {self.id!r}: only a room camera has `sees` (this one is {self.role})")
        if len(set(self.sees)) != len(self.sees):
            raise ValueError(f"camera {self.id!r}: a device listed twice in `sees`")
        return self


class RoomCamerasSection(_Strict):
    """Room cameras as witnesses (#21.3, docs/cameras.md, ADR 0142-0144)."""

    # a frame older than this is no picture of the moment (the camera froze or lags)
    max_age_s: float = Field(default=2.0, gt=0, le=60)
    # alarms keep a clip: this long before the alarm (from the ring) and after (collected)
    clip_before_s: float = Field(default=3.0, ge=0, le=30)
    clip_after_s: float = Field(default=3.0, ge=0, le=30)
    # frames per second kept in the ring and in clips: memory is ring seconds x fps x frame
    clip_fps: float = Field(default=4.0, gt=0, le=30)
    # pictures waiting to be encoded and written; beyond it an event records "writer_busy"
    queue_max: int = Field(default=64, ge=1, le=4096)


class FacesSection(_Strict):
    """Courier entry by face: the passive spoof check beside the blink (docs/faces.md)."""

    # the texture model judges every frame; off only for a camera it was shown not to suit
    passive_enabled: bool = True
    passive_threshold: float = Field(default=0.5, gt=0, lt=1)  # P(real) for a frame to count
    passive_min_real_fraction: float = Field(default=0.6, gt=0, le=1)  # share of frames


class CarrierConfig(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
    pattern: str
    send_code_pattern: str | None = None
    # customer care (#19, docs/customer-care.md): the sender that tells this carrier about its
    # parcels going back (a sender name such as "webhook-2"; None = the default sender), and
    # whether its recipients get a message when their parcels leave through the exit
    notify_sender: str | None = None
    pickup_confirmation: bool = True

    @field_validator("pattern", "send_code_pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value


class SenderConfig(_Strict):
    kind: Literal["console", "webhook", "mqtt"]
    url: str | None = None  # webhook
    topic: str | None = None  # mqtt
    # console: write pickup and one-time codes into the log. Demo only (ADR 0081): `station
    # run` refuses a configuration that sets it, `shelf-sim demo` (make demo) sets it itself.
    show_codes: bool = False

    @model_validator(mode="after")
    def _needs(self) -> SenderConfig:
        if self.kind == "webhook" and not self.url:
            raise ValueError("a webhook sender needs url")
        if self.kind == "webhook" and self.url:
            from station.notify.senders import WebhookEndpoint  # the sender's own check

            WebhookEndpoint.parse(self.url)
        if self.show_codes and self.kind != "console":
            raise ValueError("show_codes is a console sender setting")
        return self


def demo_only_settings(config: StationConfig) -> list[str]:
    """The keys set in `config` that only the demo may use: a station that runs for real
    never writes a usable code to its log (ADR 0081)."""
    return [f"notify.senders[{n}].show_codes" for n, s in enumerate(config.notify.senders)
            if s.show_codes]


class NotifySection(_Strict):
    senders: list[SenderConfig] = Field(default_factory=lambda: [SenderConfig(kind="console")])
    retry_initial_s: float = Field(default=1.0, gt=0)
    retry_max_s: float = Field(default=300.0, gt=0)


class CareSection(_Strict):
    """Reminders and notices to customers (#19, docs/customer-care.md).

    Offsets are in seconds: `remind_after_s` counts from the moment a parcel was shelved,
    `remind_before_s` back from its deadline. Each reminder goes once per parcel (once per
    deadline for the ones before it, so an extended deadline re-arms them)."""

    remind_after_s: list[Annotated[float, Field(gt=0)]] = Field(default_factory=lambda: [172800.0])
    remind_before_s: list[Annotated[float, Field(gt=0)]] = Field(default_factory=lambda: [43200.0])
    expiry_notice: bool = True
    carrier_expiry_notice: bool = True
    # a customer may extend a parcel's deadline once, by this much (0: not at all), unless
    # fewer than `extension_min_free_ratio` of the inbound slots are free (#19.3)
    extension_s: float = Field(default=172800.0, ge=0, le=30 * 86400)
    extension_min_free_ratio: float = Field(default=0.2, ge=0, le=1)
    # rows a person who cannot reach high or bend low can use, first and last (rows count
    # from the top, on every inbound shelf): a flagged recipient's parcels go there, others
    # keep them free when a slot elsewhere fits (#19.5, ADR 0154). [] = no such preference.
    reachable_rows: list[Annotated[int, Field(ge=1, le=9)]] = Field(default_factory=list)

    @field_validator("reachable_rows")
    @classmethod
    def _row_range(cls, value: list[int]) -> list[int]:
        if value and (len(value) != 2 or value[0] > value[1]):
            raise ValueError("reachable_rows is [first, last], e.g. [2, 3] for rows 2 to 3"
                             " (rows count from the top, first <= last)")
        return value

    @field_validator("remind_after_s", "remind_before_s")
    @classmethod
    def _distinct(cls, value: list[float]) -> list[float]:
        if len(set(value)) != len(value):
            raise ValueError("each reminder offset once")
        if len(value) > 8:
            raise ValueError("at most 8 reminders of a kind")
        return value


class KioskSection(_Strict):
    """How the kiosk screen starts each customer's visit (#19.5, docs/customer-care.md
    "Kiosk"). The screen is shared, so whatever a customer switches on (large text) lasts
    for their visit only; these are the defaults every visit starts from."""

    # large text and high contrast from the start: a station serving many older customers
    large_text: bool = False
    sound: bool = True    # a short tone when the door opens and the slots light
    speech: bool = True   # and the slot names spoken, where the browser has speech
    # the entry screen forgets a half-typed code and the customer's mode after this long
    # without a key or touch; the result screen goes back to the start after result_reset_s
    idle_reset_s: float = Field(default=60.0, ge=10, le=3600)
    result_reset_s: float = Field(default=90.0, ge=10, le=3600)


class LockoutSection(_Strict):
    """Guessing limits; docs/pickup-codes.md derives the odds from these numbers."""

    free_failures: int = Field(default=3, ge=1, le=10)
    first_delay_s: float = Field(default=30.0, gt=0)
    max_delay_s: float = Field(default=3600.0, gt=0)
    daily_failure_cap: int = Field(default=20, ge=1, le=1000)
    otp_ttl_s: float = Field(default=300.0, gt=0, le=1800)
    otp_tries: int = Field(default=3, ge=1, le=10)
    otp_per_phone_per_day: int = Field(default=3, ge=1, le=20)


class UpstreamSection(_Strict):
    """The fleet broker (#14.5): its own host, credentials, TLS and client id; never the
    device broker, whose clients could otherwise read every event. Off unless configured;
    the password is the `upstream_password` secret (PS_SECRET_UPSTREAM_PASSWORD)."""

    enabled: bool = False
    host: str | None = None  # required when enabled: no default that could be the device broker
    port: int = Field(default=8883, ge=1, le=65535)
    topic: str | None = None  # default ps/v1/{station}/station/events
    client_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] | None = None
    username: str | None = None
    tls: bool = True  # plaintext only when said so (a loopback test broker)
    ca_file: str | None = None  # None: the system's trust store
    cert_file: str | None = None  # client certificate (mutual TLS), with key_file
    key_file: str | None = None

    @model_validator(mode="after")
    def _usable(self) -> UpstreamSection:
        if not self.enabled:
            return self
        if not self.host:
            raise ValueError("upstream.host is required when upstream is enabled")
        if not (self.username or self.cert_file):
            raise ValueError("upstream needs its own credentials: username (password in the"
                             " secrets file as upstream_password) or cert_file/key_file")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("upstream cert_file and key_file go together")
        if (self.ca_file or self.cert_file) and not self.tls:
            raise ValueError("upstream ca_file/cert_file need tls = true")
        return self


class MetricsSection(_Strict):
    """Prometheus scrape endpoint (station/metrics.py): a port of its own, loopback unless an
    operator binds it wider on purpose."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535)  # 0: any free port (tests)


class HomeAssistantSection(_Strict):
    """MQTT discovery for Home Assistant (station/homeassistant.py), read-only. It connects to
    the site broker ([mqtt] host, port, TLS) with a client id and user of its own; the
    password is the `ha_mqtt_password` secret."""

    enabled: bool = False
    discovery_prefix: str = Field(default="homeassistant", pattern=r"^[A-Za-z0-9_\-/]+$")
    username: str | None = None
    refresh_s: float = Field(default=30.0, gt=0, le=3600)


class ApiSection(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    cors_origins: list[str] = Field(default_factory=list)
    # Stateless `ps1.operator.*` / `ps1.kiosk.*` bearer tokens from `station token create`
    # (ADR 0004): off by default, because one cannot be revoked alone (ADR 0130). Operators
    # log in with a password, kiosk screens pair; courier tokens (PIN login) always work.
    service_tokens: bool = False


class OperatorsSection(_Strict):
    """Operator sessions and kiosk pairing (#20.1, docs/operations.md "Operator accounts")."""

    session_idle_s: float = Field(default=900.0, gt=0, le=86400)  # ends a session nobody uses
    session_max_s: float = Field(default=43200.0, gt=0, le=30 * 86400)  # ends any session
    pairing_ttl_s: float = Field(default=600.0, gt=0, le=86400)  # a pairing code's life


class BundlesSection(_Strict):
    """Couriers from the fleet (#20.2, ADR 0131): signed, sealed bundles read from the fleet
    broker of [upstream] (its host, port, credentials and TLS; forwarding may stay off)."""

    enabled: bool = False
    trusted_key: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None  # the fleet's Ed25519 key
    # every fleet key a bundle may be signed by: the old and the new one while the fleet rolls
    # its key (ADR 0133); trusted_key, when set, counts as one of them
    trusted_keys: list[Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = Field(default_factory=list,
                                                                                 max_length=8)
    # refused bundles: at most one event per cause per interval, with a count (ADR 0134)
    refused_log_interval_s: float = Field(default=300.0, ge=0.1, le=86400)

    @model_validator(mode="after")
    def _usable(self) -> BundlesSection:
        if self.enabled and not self.trusted:
            raise ValueError("bundles.trusted_keys (the fleet's public keys, 64 hex each) is required when enabled")
        return self

    @property
    def trusted(self) -> list[str]:
        """The fleet keys this station trusts, each once, in the order given."""
        return list(dict.fromkeys(([self.trusted_key] if self.trusted_key else []) + self.trusted_keys))


class RetentionSection(_Strict):
    """How long events stay in the live database before they move to the archive
    (docs/operations.md "Retention"; ADR 0101). Off by default: a station that nobody set up
    for it keeps every event in the database, as before."""

    enabled: bool = False
    keep_days: int = Field(default=90, ge=1, le=3650)  # events younger than this stay live
    archive_dir: str = "var/archive"
    segment_events: int = Field(default=50_000, ge=10, le=1_000_000)  # events per archive file
    batch_events: int = Field(default=500, ge=10, le=50_000)  # rows deleted per transaction (the lock held)
    interval_s: float = Field(default=3600.0, ge=1, le=86400)  # how often retention runs
    # below the disk's first threshold, delete archive segments oldest first (they are gone
    # from the station then: copy them off with `station backup --archive` or rsync first)
    prune_archives_when_low: bool = False


class DiskSection(_Strict):
    """The disk budget of the database, the archive and the snapshots (ADR 0102)."""

    alarm_free_mb: int = Field(default=1024, ge=1)  # below: operator alarm, snapshots pruned
    refuse_free_mb: int = Field(default=256, ge=1)  # below: new shelving refused
    snapshots_max_mb: int = Field(default=4096, ge=1)  # the snapshot directory's own budget
    check_interval_s: float = Field(default=60.0, ge=1, le=3600)

    @model_validator(mode="after")
    def _ordered(self) -> DiskSection:
        if self.refuse_free_mb >= self.alarm_free_mb:
            raise ValueError("refuse_free_mb must be below alarm_free_mb (the alarm comes first)")
        return self


class StationConfig(_Strict):
    station: StationSection
    mqtt: MqttSection = MqttSection()
    api: ApiSection = ApiSection()
    operators: OperatorsSection = OperatorsSection()
    bundles: BundlesSection = BundlesSection()
    shelves: list[ShelfConfig] = Field(min_length=1)
    doors: DoorsConfig = DoorsConfig()
    cameras: list[CameraConfig] = Field(default_factory=list)
    faces: FacesSection = FacesSection()
    room_cameras: RoomCamerasSection = RoomCamerasSection()
    carriers: list[CarrierConfig] = Field(min_length=1)
    notify: NotifySection = NotifySection()
    care: CareSection = CareSection()
    kiosk: KioskSection = KioskSection()
    lockout: LockoutSection = LockoutSection()
    retention: RetentionSection = RetentionSection()
    disk: DiskSection = DiskSection()
    upstream: UpstreamSection = UpstreamSection()
    metrics: MetricsSection = MetricsSection()
    home_assistant: HomeAssistantSection = HomeAssistantSection()

    @model_validator(mode="after")
    def _unique_ids(self) -> StationConfig:
        _unique([s.number for s in self.shelves], "shelves", "number")
        _unique([c.id for c in self.cameras], "cameras", "id")
        _unique([c.name for c in self.carriers], "carriers", "name")
        devices = [s.device for s in self.shelves] + [self.doors.entry, self.doors.exit]
        _unique(devices, "shelves/doors", "device")
        for n, cam in enumerate(self.cameras):
            unknown = [d for d in cam.sees if d not in devices]
            if unknown:
                raise ValueError(
                    f"cameras[{n}] ({cam.id}).sees: {', '.join(map(repr, unknown))} is not a shelf"
                    f" device or door of this station (known: {', '.join(devices)})")
        up = self.upstream
        if up.enabled and (up.host, up.port) == (self.mqtt.host, self.mqtt.port):
            raise ValueError("upstream points at the device broker ([mqtt]), where every device"
                             " could read every event: give the fleet broker's host/port")
        _reachable_rows_exist(self.care.reachable_rows, self.shelves)
        if self.bundles.enabled and not up.host:
            # the listener reads the fleet broker of [upstream] (forwarding may stay off)
            raise ValueError("bundles needs the fleet broker: set upstream.host (and its port,"
                             " credentials and TLS)")
        return self

    @property
    def shelf_devices(self) -> dict[str, ShelfConfig]:
        return {s.device: s for s in self.shelves}

    @property
    def device_ids(self) -> list[str]:
        return [s.device for s in self.shelves] + [self.doors.entry, self.doors.exit]

    def camera(self, role: str) -> CameraConfig | None:
        return next((c for c in self.cameras if c.role == role), None)

    @property
    def room_camera_list(self) -> list[CameraConfig]:
        return [c for c in self.cameras if c.role == "room"]


def _reachable_rows_exist(rows: list[int], shelves: Sequence[ShelfConfig]) -> None:
    """A range no inbound shelf has (or one longer than every shelf) is a typo, not a wish."""
    if not rows:
        return
    inbound = [s for s in shelves if not s.outbound]
    tallest = max((s.rows for s in inbound), default=0)
    if rows[1] > tallest:
        raise ValueError(f"care.reachable_rows {rows}: no inbound shelf has row {rows[1]}"
                         f" (the tallest has {tallest} rows)")


def _unique(values: Sequence[object], section: str, key: str) -> None:
    seen: set[object] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"duplicate {key} {value!r} in {section}")
        seen.add(value)


def _format_validation(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: invalid configuration"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def parse_config(data: dict[str, object], path: Path | str = "<config>") -> StationConfig:
    try:
        return StationConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(Path(path), exc)) from None


def load_config(path: Path | str) -> StationConfig:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, path)


def dump_config_toml(config: StationConfig) -> str:
    """The config as TOML that `load_config` reads back equal, so a tool that adjusts a config
    in Python (the simulator, the test harness) can hand it to `station run` as a file.
    Keys that are None are left out (TOML has no null): every optional key defaults to None."""
    data = config.model_dump(exclude_none=True)
    head: list[str] = []
    tables: list[str] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append(_toml_table(f"[{key}]", value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            tables.extend(_toml_table(f"[[{key}]]", item) for item in value)
        else:
            head.append(f"{key} = {_toml_value(value)}")
    blocks = (["\n".join(head)] if head else []) + tables  # bare keys must precede any table
    return "\n\n".join(blocks) + "\n"


def _toml_table(header: str, values: dict[str, object]) -> str:
    return "\n".join([header, *(f"{k} = {_toml_value(v)}" for k, v in values.items())])


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)  # TOML: inf, -inf, nan
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {type(value).__name__}")


_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


# --- secrets -------------------------------------------------------------------------------

SECRET_NAMES = ("device_master_key", "hash_key", "encryption_key", "token_key")
ENV_PREFIX = "PS_SECRET_"
SECRETS_FILE_ENV = "PS_SECRETS_FILE"


class Secrets(_Strict):
    """Key material, each 32 bytes; hex or base64 in the file or `PS_SECRET_<NAME>`."""

    device_master_key: bytes
    hash_key: bytes
    encryption_key: bytes
    token_key: bytes
    mqtt_password: str | None = None
    ha_mqtt_password: str | None = None  # the Home Assistant bridge's broker login
    upstream_password: str | None = None  # the fleet broker's, beside the device broker's

    def device_key(self, station_id: str, device_id: str) -> bytes:
        """Per-device HMAC key. A real device is provisioned with only its own derived key,
        so a compromised shelf cannot sign for a door."""
        msg = f"ps-device-key/v1/{station_id}/{device_id}".encode()
        return hmac.new(self.device_master_key, msg, hashlib.sha256).digest()


def _decode_key(name: str, value: object, origin: str) -> bytes:
    if not isinstance(value, str):
        raise ConfigError(f"{origin}: {name}: must be a string of hex or base64")
    text = value.strip()
    raw: bytes | None = None
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raw = bytes.fromhex(text)
    else:
        try:
            raw = base64.b64decode(text, validate=True)
        except ValueError:
            raw = None
    if raw is None or len(raw) != 32:
        raise ConfigError(f"{origin}: {name}: must be 32 bytes as 64 hex digits or base64")
    return raw


# broker logins: plain strings, optional (a broker without passwords needs none)
PASSWORD_NAMES = ("mqtt_password", "ha_mqtt_password", "upstream_password")


def load_secrets(path: Path | str | None = None, env: dict[str, str] | None = None) -> Secrets:
    """Secrets from `path` (or $PS_SECRETS_FILE), each overridable by PS_SECRET_<NAME>."""
    env = dict(os.environ if env is None else env)
    values: dict[str, object] = {}
    origin = "environment"
    path = path or env.get(SECRETS_FILE_ENV)
    if path:
        path = Path(path)
        origin = str(path)
        try:
            values.update(tomllib.loads(path.read_text("utf-8")))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such secrets file") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except OSError as exc:  # a directory, no permission, an I/O error
            raise ConfigError(f"{path}: cannot read the secrets file: {exc.strerror or exc}") from None
    for name in (*SECRET_NAMES, *PASSWORD_NAMES):
        if f"{ENV_PREFIX}{name.upper()}" in env:
            values[name] = env[f"{ENV_PREFIX}{name.upper()}"]
    unknown = set(values) - set(SECRET_NAMES) - set(PASSWORD_NAMES)
    if unknown:
        raise ConfigError(f"{origin}: {sorted(unknown)[0]}: unknown key")
    decoded: dict[str, object] = {}
    for name in SECRET_NAMES:
        if name not in values:
            raise ConfigError(
                f"{origin}: {name}: missing secret (set it in the secrets file or {ENV_PREFIX}{name.upper()})"
            )
        decoded[name] = _decode_key(name, values[name], origin)
    for name in PASSWORD_NAMES:
        value = values.get(name)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{origin}: {name}: must be a string")
        decoded[name] = value
    return Secrets.model_validate(decoded)


def generate_secrets_toml() -> str:
    lines = ["# Station secrets: keep this file private (chmod 600), never in the config."]
    for name in SECRET_NAMES:
        lines.append(f'{name} = "{pysecrets.token_hex(32)}"')
    return "\n".join(lines) + "\n"


def write_new_secrets(path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(generate_secrets_toml())
    return path
