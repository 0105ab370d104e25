"""Shelf controller firmware: an RGB LED and a placement sensor per slot.

Ops:
  lights.set   {"slots": [{"row", "col", "colours": ["#RRGGBB", ...], "pattern", "ttl_s"}],
                "replace": bool}   colours [] = dark; replace: every slot not listed goes dark
  lights.clear {"slots": [{"row", "col"}]} or {"all": true}
Every lit LED has a time to live and goes dark by itself, so a lost "off" never leaves a slot
lit for ever. Placement sensors are debounced (`debounce_s`) and each settled change is a
`placement` event {row, col, action: put|take, count, occupied}.

    python -m firmware_stubs.shelf --config examples/station.toml --device shelf-1 \
        --broker mqtt://127.0.0.1:1883 --secrets var/secrets.toml
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from station.devices.envelope import EnvelopeError

from .base import (
    DeviceRuntime,
    Op,
    common_args,
    load_toml,
    process_options,
    require_number,
    run_process,
)
from .hal import ShelfHal

COLOUR = re.compile(r"^#[0-9A-Fa-f]{6}$")
PATTERNS = ("solid", "blink", "alternate")
MAX_COLOURS = 4
MAX_TTL_S = 86400.0


@dataclass
class _SlotSense:
    raw: int = 0
    changed_at: float = 0.0
    reported: int = 0


class ShelfController(DeviceRuntime):
    """One shelf. `hal` is the in-memory `ShelfHal` in tests and the simulator."""

    kind = "shelf"

    def __init__(
        self,
        station_id: str,
        device_id: str,
        rows: int,
        cols: int,
        key: bytes,
        broker_url: str,
        hal: ShelfHal | None = None,
        nv_path: str | None = None,
        *,
        debounce_s: float = 0.05,
        **kwargs: Any,
    ) -> None:
        super().__init__(station_id, device_id, key, broker_url, nv_path=nv_path, **kwargs)
        self.rows, self.cols = rows, cols
        self.hal = hal or ShelfHal(rows, cols, self.clock)
        self.debounce_s = debounce_s
        self._expires: dict[tuple[int, int], float] = {}  # monotonic deadline per lit LED
        # a controller that boots knows no TTL for anything an LED shows (RAM is gone, and
        # the state it reports lists no lights), so it starts every LED dark: a colour left
        # from before a reset would otherwise stay up for good, in the colour of whoever the
        # station gives it to next (the week at seed 8: 6 wrong slots lit after reboots)
        for rc in self.hal.slots():
            self.hal.led(*rc).off()
        self._sense = {rc: _SlotSense(raw=self.hal.sensor(*rc).read(),
                                      reported=self.hal.sensor(*rc).read())
                       for rc in self.hal.slots()}
        self._seen_changes = -1   # the HAL's change counter when the sensors were last read
        self._settling = False    # a change is waiting out its debounce
        self.register("lights.set", Op(self._validate_set, self._exec_set))
        self.register("lights.clear", Op(self._validate_clear, self._exec_clear))

    # --- ops ------------------------------------------------------------------------------

    def _slot(self, item: Any) -> tuple[int, int]:
        if not isinstance(item, dict):
            raise EnvelopeError("malformed", "a slot must be an object")
        row, col = item.get("row"), item.get("col")
        if not (isinstance(row, int) and isinstance(col, int)) or isinstance(row, bool) \
                or isinstance(col, bool) or not (1 <= row <= self.rows and 1 <= col <= self.cols):
            raise EnvelopeError("malformed", f"no slot row={row!r} col={col!r}")
        return row, col

    def _validate_set(self, args: dict[str, Any]) -> tuple[list[tuple[tuple[int, int], tuple[str, ...], str, float]], bool]:
        slots = args.get("slots")
        replace = args.get("replace", False)
        if not isinstance(slots, list) or len(slots) > self.rows * self.cols:
            raise EnvelopeError("malformed", "slots must be a list of at most one per slot")
        if not isinstance(replace, bool):
            raise EnvelopeError("malformed", "replace must be a boolean")
        out = []
        for item in slots:
            rc = self._slot(item)
            colours = item.get("colours")
            if not isinstance(colours, list) or len(colours) > MAX_COLOURS or not all(
                isinstance(c, str) and COLOUR.match(c) for c in colours
            ):
                raise EnvelopeError("malformed", "colours must be up to 4 #RRGGBB strings")
            pattern = item.get("pattern", "solid")
            if pattern not in PATTERNS:
                raise EnvelopeError("malformed", f"pattern must be one of {PATTERNS}")
            ttl = require_number(item, "ttl_s", 0.001, MAX_TTL_S, default=0.001 if not colours else None)
            out.append((rc, tuple(c.upper() for c in colours), pattern, ttl))
        return out, replace

    def _exec_set(self, parsed: tuple[list[Any], bool]) -> dict[str, Any]:
        items, replace = parsed
        now = self.clock.monotonic()
        if replace:
            listed = {rc for rc, *_ in items}
            for rc in list(self._expires):
                if rc not in listed:
                    self._dark(rc)
        for rc, colours, pattern, ttl in items:
            if colours:
                self.hal.led(*rc).show(colours, pattern)
                self._expires[rc] = now + ttl
            else:
                self._dark(rc)
        return {"lit": len(self._expires)}

    def _validate_clear(self, args: dict[str, Any]) -> list[tuple[int, int]] | None:
        if args.get("all") is True:
            return None
        slots = args.get("slots")
        if not isinstance(slots, list):
            raise EnvelopeError("malformed", "lights.clear needs slots or all: true")
        return [self._slot(item) for item in slots]

    def _exec_clear(self, slots: list[tuple[int, int]] | None) -> dict[str, Any]:
        for rc in list(self._expires) if slots is None else slots:
            self._dark(rc)
        return {"lit": len(self._expires)}

    def _dark(self, rc: tuple[int, int]) -> None:
        self.hal.led(*rc).off()
        self._expires.pop(rc, None)

    # --- periodic -------------------------------------------------------------------------

    def tick(self, mono: float) -> None:
        changed = False
        for rc, deadline in list(self._expires.items()):
            if mono >= deadline:  # the time to live: a lost "off" cannot keep a slot lit
                self._dark(rc)
                changed = True
        changes = getattr(self.hal, "changes", None)
        version = changes() if changes is not None else None
        if version is None or version != self._seen_changes or self._settling:
            self._seen_changes = version if version is not None else -1
            changed = self._read_sensors(mono) or changed
        if changed:
            self._state_dirty = True

    def _read_sensors(self, mono: float) -> bool:
        changed, settling = False, False
        for rc, sense in self._sense.items():
            raw = self.hal.sensor(*rc).read()
            if raw != sense.raw:
                sense.raw, sense.changed_at = raw, mono
            elif raw != sense.reported and mono - sense.changed_at >= self.debounce_s:
                action = "put" if raw > sense.reported else "take"
                sense.reported = raw
                self.emit("placement", {"row": rc[0], "col": rc[1], "action": action,
                                        "count": raw, "occupied": raw > 0})
                changed = True
            settling = settling or raw != sense.reported
        self._settling = settling
        return changed

    def snapshot(self) -> dict[str, Any]:
        now = self.clock.monotonic()
        lights = []
        for rc, deadline in sorted(self._expires.items()):
            led = self.hal.led(*rc)
            lights.append({"row": rc[0], "col": rc[1], "colours": list(led.colours),
                           "pattern": led.pattern, "ttl_left_s": round(max(0.0, deadline - now), 3)})
        occupied = [{"row": rc[0], "col": rc[1], "count": s.reported}
                    for rc, s in sorted(self._sense.items()) if s.reported > 0]
        return {"rows": self.rows, "cols": self.cols, "lights": lights, "occupied": occupied}


def main(argv: list[str] | None = None) -> None:
    """`python -m firmware_stubs.shelf --config FILE --device shelf-1 --broker URL`."""
    args = common_args("shelf controller (stub HAL)").parse_args(argv)
    conf = load_toml(args.config)
    station_id = conf["station"]["id"]
    shelf = next((s for s in conf.get("shelves", []) if s.get("device") == args.device), None)
    if shelf is None:
        raise SystemExit(f"{args.config}: no shelf with device {args.device!r}")
    opts = process_options(args, conf, station_id)
    device = ShelfController(
        station_id, args.device, int(shelf["rows"]), int(shelf["columns"]), opts.pop("key"),
        args.broker, **opts,
    )
    run_process(device)


if __name__ == "__main__":
    main()
