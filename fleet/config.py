"""Fleet configuration: one TOML file, validated with pydantic; secrets (broker and database
passwords, the operators' token key) from a secrets file or PS_SECRET_* like the station's,
never in the TOML."""

from __future__ import annotations

import os
import secrets as pysecrets
import ssl
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from station.config import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DatabaseSection(_Strict):
    # libpq connection string without the password (that is the `db_password` secret)
    dsn: str = "host=127.0.0.1 port=5432 dbname=fleet user=fleet"


class BrokerSection(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    # stable across restarts: the broker keeps this client's session (and what it has not
    # acknowledged) while it is down
    client_id: str = Field(default="fleet-ingest-1", min_length=1, max_length=64)
    group: str = Field(default="fleet", pattern=r"^[A-Za-z0-9_-]{1,32}$")
    topic: str = "ps/v1/+/station/events"
    session_expiry_s: int = Field(default=7 * 86400, ge=0)
    keepalive_s: int = Field(default=30, ge=5, le=600)


class IngestSection(_Strict):
    batch_max: int = Field(default=500, ge=1, le=20000)
    batch_wait_s: float = Field(default=0.02, ge=0, le=5)
    receive_maximum: int = Field(default=1000, ge=1, le=65535)
    # a station the fleet misses events of for this long is asked to resend (ADR 0113)
    resend_grace_s: float = Field(default=5.0, ge=0)
    resend_every_s: float = Field(default=30.0, gt=0)


class ServeSection(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    online_window_s: float = Field(default=900.0, gt=0)


class FleetConfig(_Strict):
    database: DatabaseSection = DatabaseSection()
    broker: BrokerSection = BrokerSection()
    ingest: IngestSection = IngestSection()
    serve: ServeSection = ServeSection()
    # station id -> URL of its own operator console (linked from the stations page)
    consoles: dict[str, str] = Field(default_factory=dict)


class FleetSecrets(_Strict):
    token_key: bytes
    broker_password: str | None = None
    db_password: str | None = None
    hash_key: bytes | None = None  # the stations' phone hash key, to search by phone
    # encrypts the couriers' face templates at rest in PostgreSQL (fleet/couriers.py): the
    # database and its backups hold ciphertext only
    template_key: bytes | None = None


SECRET_ENV = "PS_SECRET_"


def load_fleet_config(path: Path | str | None) -> FleetConfig:
    if path is None:
        return FleetConfig()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return FleetConfig.model_validate(data)
    except ValidationError as exc:
        lines = [f"{path}: invalid configuration"]
        for e in exc.errors():
            msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
            lines.append(f"  {'.'.join(str(p) for p in e['loc'])}: {msg}")
        raise ConfigError("\n".join(lines)) from None


_NAMES = ("token_key", "broker_password", "db_password", "hash_key", "template_key")
_KEYS = ("token_key", "hash_key", "template_key")  # 32 bytes each, as 64 hex digits


def _secret_values(path: Path | str | None, env: dict[str, str]) -> tuple[dict[str, object], str]:
    """The raw values of the secrets file and PS_SECRET_* (the environment wins), and where
    they came from (for the error message)."""
    values: dict[str, object] = {}
    origin = "environment"
    path = path or env.get("PS_FLEET_SECRETS_FILE")
    if path:
        origin = str(path)
        try:
            values.update(tomllib.loads(Path(path).read_text("utf-8")))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such secrets file") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
            raise ConfigError(f"{path}: cannot read the secrets file: {exc}") from None
    for name in _NAMES:
        if f"{SECRET_ENV}{name.upper()}" in env:
            values[name] = env[f"{SECRET_ENV}{name.upper()}"]
    unknown = set(values) - set(_NAMES)
    if unknown:
        raise ConfigError(f"{origin}: {sorted(unknown)[0]}: unknown key")
    return values, origin


def _key(values: dict[str, object], origin: str, name: str) -> bytes | None:
    raw = values.get(name)
    if raw is None:
        return None
    try:
        key = bytes.fromhex(str(raw))
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ConfigError(f"{origin}: {name}: must be 64 hex digits")
    return key


def load_fleet_secrets(path: Path | str | None = None, env: dict[str, str] | None = None) -> FleetSecrets:
    values, origin = _secret_values(path, dict(os.environ if env is None else env))
    out: dict[str, object] = {k: values.get(k) for k in ("broker_password", "db_password")}
    for name in _KEYS:
        out[name] = _key(values, origin, name)
    if out["token_key"] is None:
        raise ConfigError(f"{origin}: token_key: missing secret (set it in the secrets file"
                          f" or {SECRET_ENV}TOKEN_KEY)")
    return FleetSecrets.model_validate(out)


def load_template_key(path: Path | str | None = None, env: dict[str, str] | None = None) -> bytes:
    """The face-template key alone, for the commands that need nothing else of the secrets
    (`fleet courier enrol`, the bundle publisher); a clear error when it is not set."""
    values, origin = _secret_values(path, dict(os.environ if env is None else env))
    key = _key(values, origin, "template_key")
    if key is None:
        raise ConfigError(f"{origin}: template_key: missing secret (the key of the face templates at rest:"
                          f" `fleet init-secrets` writes one; or set {SECRET_ENV}TEMPLATE_KEY)")
    return key


def generate_fleet_secrets_toml() -> str:
    return ("# Fleet secrets: keep private (chmod 600), never in the config.\n"
            f'token_key = "{pysecrets.token_hex(32)}"\n'
            "# the couriers' face templates at rest in PostgreSQL: lose it and they must be enrolled again\n"
            f'template_key = "{pysecrets.token_hex(32)}"\n')


def tls_context(ca_file: str | None, cert_file: str | None, key_file: str | None) -> ssl.SSLContext:
    """Verify the server against `ca_file` (or the system store); present a client
    certificate when one is configured."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


def dsn_with_password(dsn: str, password: str | None) -> str:
    if not password:
        return dsn
    from psycopg.conninfo import make_conninfo

    return make_conninfo(dsn, password=password)
