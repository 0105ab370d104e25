"""Door controller firmware: lock, door contact, emergency-release input.

Ops:
  unlock {"pulse_s": float?}  unlock, then relock by itself after the pulse
  lock   {}                   relock now
Events: door.unlocked, door.locked, door.opened {authorized}, door.closed {open_s},
door.held_open (alarm), door.forced_open (alarm: contact opened while the bolt was engaged),
door.emergency_release (the input unlocks regardless of anything; relocks when reset).

An ack of `unlock` says the bolt was released, not that anyone went through: the contact
reports what really happened (`door.opened`), and an opening nobody commanded is its own
alarm. Unlocking never depends on the contact, so a broken sensor cannot lock people in.
"""

from __future__ import annotations

from typing import Any

from .base import (
    DeviceRuntime,
    Op,
    common_args,
    load_toml,
    process_options,
    require_number,
    run_process,
)
from .hal import DoorHal


class DoorController(DeviceRuntime):
    """One door. `hal` is the in-memory `DoorHal` in tests and the simulator."""

    kind = "door"

    def __init__(
        self,
        station_id: str,
        device_id: str,
        key: bytes,
        broker_url: str,
        hal: DoorHal | None = None,
        nv_path: str | None = None,
        *,
        pulse_s: float = 5.0,
        held_open_s: float = 60.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(station_id, device_id, key, broker_url, nv_path=nv_path, **kwargs)
        self.hal = hal or DoorHal(self.clock)
        self.pulse_s = pulse_s
        self.held_open_s = held_open_s
        self.hal.set_locked(True)  # a booting controller locks: power-up never opens a door
        self._relock_at: float | None = None
        self._open = self.hal.read_contact()
        self._opened_at = self.clock.monotonic()
        self._held_alarm = False
        self._emergency = self.hal.read_emergency()
        if self._emergency:
            self.hal.set_locked(False)
        self.register("unlock", Op(self._validate_unlock, self._exec_unlock))
        self.register("lock", Op(lambda args: None, self._exec_lock))

    def _validate_unlock(self, args: dict[str, Any]) -> float:
        return require_number(args, "pulse_s", 0.05, 60.0, default=self.pulse_s)

    def _exec_unlock(self, pulse_s: float) -> dict[str, Any]:
        self.hal.set_locked(False)
        self._relock_at = self.clock.monotonic() + pulse_s
        self.emit("door.unlocked", {"cause": "command", "pulse_s": pulse_s})
        return {"locked": False, "pulse_s": pulse_s}

    def _exec_lock(self, _: None) -> dict[str, Any]:
        self._relock_at = None
        if self._emergency:
            return {"locked": False, "emergency": True}  # the emergency input wins
        if not self.hal.locked:
            self.hal.set_locked(True)
            self.emit("door.locked", {"cause": "command"})
        return {"locked": True}

    def tick(self, mono: float) -> None:
        changed = False
        emergency = self.hal.read_emergency()
        if emergency != self._emergency:
            self._emergency = emergency
            changed = True
            if emergency:
                was_locked = self.hal.locked
                self.hal.set_locked(False)
                self.emit("door.emergency_release", {"was_locked": was_locked})
            else:
                self.emit("door.emergency_reset", {})
                if self._relock_at is None:
                    self.hal.set_locked(True)
                    self.emit("door.locked", {"cause": "emergency_reset"})
        if self._relock_at is not None and mono >= self._relock_at:
            self._relock_at = None
            if not self._emergency:
                self.hal.set_locked(True)
                self.emit("door.locked", {"cause": "pulse_end"})
                changed = True
        is_open = self.hal.read_contact()
        if is_open != self._open:
            self._open = is_open
            changed = True
            if is_open:
                authorized = not self.hal.locked
                self._opened_at, self._held_alarm = mono, False
                self.emit("door.opened", {"authorized": authorized, "emergency": self._emergency})
                if not authorized:
                    self.emit("door.forced_open", {})
            else:
                self.emit("door.closed", {"open_s": round(mono - self._opened_at, 3)})
        if self._open and not self._held_alarm and mono - self._opened_at >= self.held_open_s:
            self._held_alarm = True
            self.emit("door.held_open", {"open_s": round(mono - self._opened_at, 3)})
            changed = True
        if changed:
            self._state_dirty = True

    def snapshot(self) -> dict[str, Any]:
        relock = self._relock_at
        return {
            "locked": self.hal.locked,
            "open": self._open,
            "emergency": self._emergency,
            "held_open_alarm": self._held_alarm,
            "relock_in_s": None if relock is None else round(max(0.0, relock - self.clock.monotonic()), 3),
        }


def main(argv: list[str] | None = None) -> None:
    """`python -m firmware_stubs.door --config FILE --device door-entry --broker URL`."""
    args = common_args("door controller (stub HAL)").parse_args(argv)
    conf = load_toml(args.config)
    station_id = conf["station"]["id"]
    doors = conf.get("doors", {})
    if args.device not in (doors.get("entry", "door-entry"), doors.get("exit", "door-exit")):
        raise SystemExit(f"{args.config}: no door with device {args.device!r}")
    opts = process_options(args, conf, station_id)
    device = DoorController(
        station_id, args.device, opts.pop("key"), args.broker,
        pulse_s=float(doors.get("unlock_pulse_s", 5.0)),
        held_open_s=float(doors.get("held_open_alarm_s", 60.0)), **opts,
    )
    run_process(device)


if __name__ == "__main__":
    main()
