"""Keep every shelf showing exactly what the database says (domain/lights.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable

from station.domain.layout import SlotAddress
from station.domain.lights import LightSpec, SlotClaim, compose

from .context import Ctx
from .ports import Handle

Key = tuple[int, int]


class LightSync:
    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self._sent: dict[str, dict[Key, tuple[tuple[str, ...], str]]] = {}
        self._last: dict[str, Handle] = {}
        # compute-and-send is one step: two threads (a scan under ctx.lock, the ticker or a
        # session close outside it) must not send their views in the opposite order to the
        # one they computed them in, or a shelf ends up showing the older one
        self._lock = threading.Lock()
        # per shelf, the maps sent and not yet superseded by an acknowledged one: until a
        # shelf confirms a map, every colour of every earlier map may still be showing
        self._unconfirmed: dict[str, list[tuple[Handle, dict[str, float]]]] = {}
        self._confirmed: dict[str, dict[str, float]] = {}
        # a leaf lock for those two: colour allocation runs inside a store transaction, so
        # it must never wait for `_lock`, whose holder waits for the store
        self._track_lock = threading.Lock()

    def _track(self, device: str, handle: Handle, lights: dict[Key, LightSpec], now: float) -> None:
        colours: dict[str, float] = {}
        for spec in lights.values():
            for colour in spec.colours:
                colours[colour] = max(colours.get(colour, 0.0), now + spec.ttl_s)
        with self._track_lock:
            self._unconfirmed.setdefault(device, []).append((handle, colours))

    def colours_maybe_shown(self, now: float | None = None) -> set[str]:
        """Colours some shelf may still show: those of the last map it confirmed, and of
        every map sent since (a lost "off" keeps an old colour up to its TTL)."""
        now = self.ctx.clock() if now is None else now
        shown: set[str] = set()
        with self._track_lock:
            for device, pending in self._unconfirmed.items():
                last_acked = None
                for i, (handle, _) in enumerate(pending):
                    done = getattr(handle, "done", None)
                    if done is None or done():
                        outcome = getattr(handle, "outcome", None)
                        status = getattr(outcome, "status", "acked") if outcome is not None else "acked"
                        if status == "acked":
                            last_acked = i
                if last_acked is not None:
                    self._confirmed[device] = pending[last_acked][1]
                    del pending[: last_acked + 1]
                if len(pending) > 64:  # unanswered maps: their TTLs bound them anyway
                    del pending[:-64]
                for _, colours in pending:
                    shown.update(c for c, until in colours.items() if until > now)
            for colours in self._confirmed.values():
                shown.update(c for c, until in colours.items() if until > now)
        return shown

    def colours_in_use(self) -> list[str]:
        """What colour allocation must avoid: live sessions' colours and any colour a shelf
        may still be showing, so nobody sees an old slot lit in their new colour."""
        open_sessions = [r["colour"] for r in self.ctx.store.query(
            "SELECT colour FROM sessions WHERE state = 'open' AND colour IS NOT NULL")]
        return open_sessions + sorted(self.colours_maybe_shown() - set(open_sessions))

    def claims(self, now: float) -> list[SlotClaim]:
        """Who should go where, until when: an open session's or a waiting placement's end as
        the steady clock has it (ADR 0070), so a wall-clock step neither darkens a slot
        somebody is walking to nor keeps one lit."""
        store = self.ctx.store
        at = self.ctx.stamp(now)
        timeouts = self.ctx.timeouts
        claims: list[SlotClaim] = []
        for row in store.query(
            "SELECT ss.slot, s.id, s.colour, s.expires_at FROM session_slots ss"
            " JOIN sessions s ON s.id = ss.session_id"
            " WHERE s.state = 'open' AND s.kind = 'pickup' AND ss.remaining > 0"
        ):
            until = timeouts["pickup"].until(row["id"], row["expires_at"], at)
            claims.append(SlotClaim(SlotAddress.parse(row["slot"]), row["colour"], until))
        for row in store.query(
            "SELECT p.target_slot, p.id, s.colour, p.deadline FROM pending_placements p"
            " JOIN sessions s ON s.id = p.session_id"
            " WHERE p.state = 'waiting' AND p.target_slot IS NOT NULL AND s.state = 'open'"
        ):
            until = timeouts["placement"].until(row["id"], row["deadline"], at)
            claims.append(SlotClaim(SlotAddress.parse(row["target_slot"]), row["colour"], until))
        for row in store.query(
            # a put waiting for its courier's "yes, it is in this slot": the slot the handheld
            # names stays lit so the courier sees which one is meant (docs/adr/0095)
            "SELECT p.put_slot, p.id, s.colour, p.deadline FROM pending_placements p"
            " JOIN sessions s ON s.id = p.session_id"
            " WHERE p.state = 'unverified' AND p.put_slot IS NOT NULL AND s.state = 'open'"
        ):
            # the same steady deadline that times the placement out (shelving.expire_placements)
            until = timeouts["placement"].until(row["id"], row["deadline"], at)
            claims.append(SlotClaim(SlotAddress.parse(row["put_slot"]), row["colour"], until))
        for row in store.query(
            "SELECT id, colour, expires_at, parcels FROM sessions"
            " WHERE state = 'open' AND kind IN ('return', 'dropoff')"
        ):
            ids = json.loads(row["parcels"])
            if not ids:
                continue
            until = timeouts["run"].until(row["id"], row["expires_at"], at)
            marks = ",".join("?" * len(ids))
            for p in store.query(
                f"SELECT slot FROM parcels WHERE id IN ({marks})"
                " AND state IN ('expired', 'recalled', 'refused', 'dropped_off')",
                ids,
            ):
                claims.append(SlotClaim(SlotAddress.parse(p["slot"]), row["colour"], until))
        return claims

    def alarms(self, now: float | None = None) -> list[tuple[SlotAddress, float]]:
        at = self.ctx.stamp(now)
        ends = self.ctx.timeouts["alarm"]
        return [
            (SlotAddress.parse(r["slot"]), ends.until(r["slot"], r["until"], at))
            for r in self.ctx.store.query("SELECT slot, until FROM slot_alarms")
        ]

    def desired(self, now: float | None = None) -> dict[str, dict[Key, LightSpec]]:
        now = self.ctx.clock() if now is None else now
        lights = compose(self.claims(now), self.alarms(now), now, self.ctx.config.mqtt.light_ttl_s)
        per_device: dict[str, dict[Key, LightSpec]] = {
            shelf.device: {} for shelf in self.ctx.layout.shelves
        }
        for slot, spec in lights.items():
            per_device[self.ctx.device_of(slot)][(slot.row, slot.col)] = spec
        return per_device

    def refresh(self, devices: Iterable[str] | None = None, *, force: bool = False) -> list[Handle]:
        """Send each shelf its desired lights if they changed (or always, with force).

        An unchanged shelf yields the handle of the command that last carried this state, so
        a caller waiting for "my slot is lit" still learns when (and whether) it was acked,
        also when another thread happened to send it first."""
        with self._lock:
            desired = self.desired()
            wanted = set(devices) if devices is not None else set(desired)
            handles: list[Handle] = []
            for device in sorted(wanted):
                lights = desired.get(device, {})
                summary = {k: (v.colours, v.pattern) for k, v in lights.items()}
                if not force and self._sent.get(device) == summary:
                    if device in self._last:
                        handles.append(self._last[device])
                    continue
                self._sent[device] = summary
                handle = self.ctx.devices.replace_lights(device, lights)
                self._track(device, handle, lights, self.ctx.clock())
                self._last[device] = handle
                handles.append(handle)
            return handles

    def devices_of(self, slots: Iterable[str | SlotAddress]) -> set[str]:
        out = set()
        for slot in slots:
            addr = slot if isinstance(slot, SlotAddress) else SlotAddress.parse(slot)
            out.add(self.ctx.device_of(addr))
        return out
