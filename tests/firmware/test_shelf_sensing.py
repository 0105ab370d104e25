"""The shelf's sensor scan: skipped while the HAL says nothing moved, never missing a change,
and a board without a change counter is read every tick as before."""

from __future__ import annotations

from typing import Any

from firmware_stubs.hal import ShelfHal
from firmware_stubs.shelf import ShelfController


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def monotonic(self) -> float:
        return self.t

    def host_wall(self) -> float:
        return 1_767_225_600.0 + self.t


class CountingHal(ShelfHal):
    """Counts sensor reads; `with_counter=False` is a board with no change line."""

    def __init__(self, with_counter: bool = True) -> None:
        super().__init__(2, 3)
        self.reads = 0
        self.with_counter = with_counter

    def sensor(self, row: int, col: int) -> Any:
        self.reads += 1
        return super().sensor(row, col)

    def __getattribute__(self, name: str) -> Any:
        if name == "changes" and not object.__getattribute__(self, "with_counter"):
            raise AttributeError(name)
        return super().__getattribute__(name)


def _shelf(hal: ShelfHal, clock: Clock) -> tuple[ShelfController, list[dict[str, Any]]]:
    ctrl = ShelfController("st", "shelf-1", 2, 3, b"k" * 32, "mqtt://127.0.0.1:1", hal=hal,
                           clock=clock, debounce_s=0.05)
    events: list[dict[str, Any]] = []
    ctrl.emit = lambda kind, data: events.append({"kind": kind, **data})  # type: ignore[method-assign]
    return ctrl, events


def test_nothing_moved_nothing_read_and_a_put_is_reported_after_its_debounce() -> None:
    clock, hal = Clock(), CountingHal()
    ctrl, events = _shelf(hal, clock)
    ctrl.tick(clock.t)
    hal.reads = 0
    for _ in range(10):
        clock.t += 0.01
        ctrl.tick(clock.t)
    assert hal.reads == 0
    hal.sensor(2, 3).put()
    for _ in range(10):                      # 0.1 s: past the 50 ms debounce
        clock.t += 0.01
        ctrl.tick(clock.t)
    assert [(e["kind"], e["row"], e["col"], e["action"]) for e in events] == [("placement", 2, 3, "put")]
    hal.reads = 0
    clock.t += 0.01
    ctrl.tick(clock.t)
    assert hal.reads == 0                    # settled: idle again


def test_a_board_without_a_change_counter_is_read_every_tick() -> None:
    clock, hal = Clock(), CountingHal(with_counter=False)
    ctrl, events = _shelf(hal, clock)
    hal.reads = 0
    ctrl.tick(clock.t)
    assert hal.reads == 6
    hal._sensors[(1, 1)].count = 1           # raw hardware: no notification at all
    for _ in range(10):
        clock.t += 0.01
        ctrl.tick(clock.t)
    assert [(e["action"], e["row"], e["col"]) for e in events] == [("put", 1, 1)]


def test_a_shelf_that_boots_starts_every_led_dark() -> None:
    """A reset keeps the hardware (the parcels, the LED driver's last frame in a board that
    keeps power to its strip) but not the firmware's RAM: no TTL is known for what an LED
    shows, and the reported state lists no lights, so the station would never clear it."""
    clock, hal = Clock(), CountingHal()
    hal.led(1, 2).show(("#2962FF",), "solid")
    hal.sensor(2, 3).put()
    ctrl, _events = _shelf(hal, clock)
    assert not any(hal.led(*rc).lit for rc in hal.slots())
    assert ctrl.snapshot()["lights"] == [] and ctrl.snapshot()["occupied"] == [
        {"row": 2, "col": 3, "count": 1}]
