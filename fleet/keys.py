"""The fleet's bundle signing keys, and rolling them without a gap (ADR 0133).

A key directory (mode 0700) holds one Ed25519 private key per file, `<kid>.pem` (0600), and
`keys.json`, which says which key signs (`active`), which is staged to sign next (`next`)
and which signed before (`retired`). A key id (kid) is the first 16 hex digits of SHA-256 of
the raw public key; bundles name the kid that signed them (station/bundles.py), so a station
can say which key it was given and does not trust.

    fleet keys init DIR [--from OLD.pem]   # the first key (or the one `fleet.bundles keygen` made)
    fleet keys next DIR                     # stage the next key: prints its public key
    fleet keys rotate DIR [--now]           # the staged key signs from the publisher's next round
    fleet keys list DIR
    fleet keys status DIR --dsn DSN         # which key signed each station's bundle; applied?
    fleet keys retire DIR KID               # delete a retired private key

Rolling without a gap: `next`, give its public key to every station (`[bundles]
trusted_keys` = old + new), `rotate`, wait until `status` shows every station applied a
bundle signed by the new key, then drop the old key from the stations and `retire` it.
The publisher (`fleet bundles run --keys DIR`) reads `keys.json` every round and re-signs
every station's bundle (a new version, same couriers) when the active key changes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from station.bundles import key_id, public_hex

STATE = "keys.json"


class KeyError_(ValueError):  # noqa: N801 - KeyError is a builtin of another meaning
    pass


@dataclass(frozen=True)
class KeyState:
    active: str | None
    next: str | None
    retired: tuple[str, ...]


def _read_state(directory: Path) -> KeyState:
    path = directory / STATE
    try:
        raw = json.loads(path.read_text())
        return KeyState(raw.get("active"), raw.get("next"), tuple(raw.get("retired", ())))
    except FileNotFoundError:
        raise KeyError_(f"{directory}: no {STATE} (make the first key with `fleet keys init {directory}`)") from None
    except (ValueError, AttributeError) as exc:
        raise KeyError_(f"{path}: not a key state file: {exc}") from None


def _write_state(directory: Path, state: KeyState) -> None:
    """Atomically (a rename), so a publisher reading it mid-write sees the old or the new."""
    tmp = directory / f".{STATE}.tmp"
    tmp.write_text(json.dumps({"active": state.active, "next": state.next, "retired": list(state.retired)},
                              indent=1) + "\n")
    os.replace(tmp, directory / STATE)


def _write_key(directory: Path, key: Ed25519PrivateKey) -> str:
    kid = key_id(key.public_key())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(directory / f"{kid}.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return kid


def load_key(directory: Path, kid: str) -> Ed25519PrivateKey:
    path = directory / f"{kid}.pem"
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise KeyError_(f"{path}: missing (key {kid})") from None
    except ValueError as exc:
        raise KeyError_(f"{path}: not a private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyError_(f"{path}: not an Ed25519 private key")
    if key_id(key.public_key()) != kid:
        raise KeyError_(f"{path}: holds another key than {kid}")
    return key


def init(directory: Path, existing: Path | None = None) -> str:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if (directory / STATE).exists():
        raise KeyError_(f"{directory}: already holds keys ({STATE}); use `fleet keys next` and `rotate`")
    if existing is not None:
        key = serialization.load_pem_private_key(existing.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyError_(f"{existing}: not an Ed25519 private key")
    else:
        key = Ed25519PrivateKey.generate()
    kid = _write_key(directory, key)
    _write_state(directory, KeyState(kid, None, ()))
    return kid


def stage_next(directory: Path) -> str:
    state = _read_state(directory)
    if state.next is not None:
        raise KeyError_(f"key {state.next} is staged already; `fleet keys rotate` makes it sign")
    kid = _write_key(directory, Ed25519PrivateKey.generate())
    _write_state(directory, KeyState(state.active, kid, state.retired))
    return kid


def rotate(directory: Path, now: bool = False) -> tuple[str | None, str]:
    """(old, new): the staged key becomes the signing one. Without a staged key, only with
    `now` (a key made and used at once: stations refuse its bundles until they trust it)."""
    state = _read_state(directory)
    new = state.next
    if new is None:
        if not now:
            raise KeyError_("no staged key: `fleet keys next` first and add its public key to every station's"
                            " [bundles] trusted_keys (or --now, for a leaked key: stations refuse the new"
                            " bundles until they trust it)")
        new = _write_key(directory, Ed25519PrivateKey.generate())
    load_key(directory, new)  # present and sound before anything signs with it
    retired = state.retired + ((state.active,) if state.active else ())
    _write_state(directory, KeyState(new, None, retired))
    return state.active, new


def retire(directory: Path, kid: str) -> None:
    state = _read_state(directory)
    if kid in (state.active, state.next):
        raise KeyError_(f"key {kid} is {'active' if kid == state.active else 'staged'}; only a retired key goes")
    if kid not in state.retired:
        raise KeyError_(f"no retired key {kid}")
    (directory / f"{kid}.pem").unlink(missing_ok=True)
    _write_state(directory, KeyState(state.active, state.next, tuple(k for k in state.retired if k != kid)))


def listing(directory: Path) -> list[dict[str, Any]]:
    state = _read_state(directory)
    out = []
    for kid, role in ([(state.active, "active")] if state.active else []) + \
                     ([(state.next, "next")] if state.next else []) + [(k, "retired") for k in state.retired]:
        path = directory / f"{kid}.pem"
        public = public_hex(load_key(directory, kid).public_key()) if path.exists() else None
        out.append({"kid": kid, "state": role, "public_key": public})
    return out


class SigningKeys:
    """What the publisher signs with: the active key of a directory, re-read when
    `keys.json` changes (a rotation takes effect at the next round, no restart)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._stamp: tuple[int, int] | None = None
        self._kid: str | None = None
        self._key: Ed25519PrivateKey | None = None
        self.current()

    def current(self) -> tuple[str, Ed25519PrivateKey]:
        st = (self.directory / STATE).stat()
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp != self._stamp or self._key is None:
            state = _read_state(self.directory)
            if state.active is None:
                raise KeyError_(f"{self.directory}: no active key")
            self._key, self._kid, self._stamp = load_key(self.directory, state.active), state.active, stamp
        assert self._kid is not None
        return self._kid, self._key


def fixed(key: Ed25519PrivateKey) -> Any:
    """A single key file (`--signing-key`) as a SigningKeys that never changes."""
    kid = key_id(key.public_key())

    class _Fixed:
        def current(self) -> tuple[str, Ed25519PrivateKey]:
            return kid, key
    return _Fixed()


def status(conn: Any, active: str) -> list[dict[str, Any]]:
    """Per station: the last bundle published (version, the key that signed it) and the last
    one the station says it applied (its `courier.bundle.applied`, as ingested)."""
    # the station's newest applied bundle of that key through the trace's keys (`k:<kid>`,
    # fleet/core.py event_keys): a primary-key lookup per station, not a scan of its events
    rows = conn.execute(
        "SELECT b.station_id, b.version, b.signed_by,"
        " (SELECT (e.data::jsonb->>'version')::bigint FROM event_keys k JOIN events e"
        "   ON e.station_id = k.station_id AND e.seq = k.seq"
        "  WHERE k.station_id = b.station_id AND k.key = %s ORDER BY k.seq DESC LIMIT 1)"
        " FROM fleet_bundles b ORDER BY b.station_id", (f"k:{active}",)).fetchall()
    return [{"station": r[0], "published_version": r[1], "signed_by": r[2], "applied_with_active": r[3]}
            for r in rows]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fleet keys", description="the fleet's bundle signing keys")
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("init", help="the first signing key")
    i.add_argument("dir")
    i.add_argument("--from", dest="existing", help="take this PEM (from `fleet.bundles keygen`) as the first key")
    sub.add_parser("next", help="stage the next key; prints its public key for the stations").add_argument("dir")
    r = sub.add_parser("rotate", help="the staged key signs from now on")
    r.add_argument("dir")
    r.add_argument("--now", action="store_true", help="no staged key: make one and use it at once (a gap)")
    sub.add_parser("list").add_argument("dir")
    s = sub.add_parser("status", help="which key signed each station's last bundle, and whether it applied it")
    s.add_argument("dir")
    s.add_argument("--dsn", default=os.environ.get("FLEET_DSN", ""))
    t = sub.add_parser("retire", help="delete a retired key")
    t.add_argument("dir")
    t.add_argument("kid")
    args = p.parse_args(argv)
    directory = Path(args.dir)
    try:
        if args.cmd == "init":
            kid = init(directory, Path(args.existing) if args.existing else None)
            print(f"active key {kid}; stations trust its public key:")
            print(public_hex(load_key(directory, kid).public_key()))
        elif args.cmd == "next":
            kid = stage_next(directory)
            print(f"staged key {kid}; add its public key to every station's [bundles] trusted_keys, then"
                  " `fleet keys rotate`:")
            print(public_hex(load_key(directory, kid).public_key()))
        elif args.cmd == "rotate":
            old, new = rotate(directory, args.now)
            print(f"key {new} signs from the publisher's next round (was {old}); every station gets a bundle"
                  f" signed by it. When `fleet keys status` shows all applied, drop {old} from the stations.")
        elif args.cmd == "list":
            for row in listing(directory):
                print(json.dumps(row))
        elif args.cmd == "status":
            import psycopg

            active = _read_state(directory).active or ""
            try:
                with psycopg.connect(args.dsn, autocommit=True) as conn:
                    rows = status(conn, active)
            except psycopg.Error as exc:
                raise KeyError_(f"fleet database: {str(exc).strip().splitlines()[0]}") from None
            behind = 0
            for row in rows:
                ok = row["signed_by"] == active and row["applied_with_active"] == row["published_version"]
                behind += not ok
                print(f"{row['station']:<16} published v{row['published_version']} signed by {row['signed_by']}"
                      f"  applied with {active}: {row['applied_with_active'] or 'not yet'}")
            print(f"{len(rows) - behind} of {len(rows)} stations on key {active}")
            return 0 if behind == 0 else 1
        elif args.cmd == "retire":
            retire(directory, args.kid)
            print(f"deleted retired key {args.kid}")
    except (KeyError_, OSError) as exc:
        print(f"fleet keys: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
