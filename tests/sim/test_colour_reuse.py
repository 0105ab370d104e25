"""Found by the simulator (examples/day.toml, faults on: `wrong_slots_lit` > 0); fixed by
LightSync.colours_in_use, which keeps a colour taken while any shelf may still show it.

When a pickup session closes, its colour is free at once (domain/colours.allocate_colour
counts open sessions only). The "lights off" for the closed session's slots is a command
that may be lost or delayed (the link retries it), so the next customer can be given the
same colour while a slot on another shelf still shows it: they see a slot lit in their
colour that holds none of their parcels. DESIGN §8: zero wrong slots lit with messages
dropped and delayed."""

from __future__ import annotations

import time
from pathlib import Path

from shelf_sim.kpi import Metrics
from shelf_sim.runner import EmbeddedStation
from shelf_sim.scenario import Scenario
from station.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def _shelve(stack: EmbeddedStation, session: str, waybill: str, phone: str, slot: str) -> str:
    core = stack.station.core
    core.shelving.scan(session, waybill, phone, "S")
    shelf, row, col = slot.split("-")
    device = next(s.device for s in stack.config.shelves if str(s.number) == shelf)
    stack.devices.shelf_hals[device].sensor(int(row), int(col)).put()
    msgs = stack.sms.wait_for(phone, "pickup_code", 1, 10)
    assert msgs, f"no code for {waybill}"
    return str(msgs[-1]["code"])


def _lit(stack: EmbeddedStation) -> dict[str, tuple[str, ...]]:
    out = {}
    for shelf in stack.config.shelves:
        for (row, col), led in stack.devices.shelf_hals[shelf.device].lit().items():
            out[f"{shelf.number}-{row}-{col:02d}"] = led.colours
    return out


def test_a_colour_is_not_reused_while_its_old_slots_may_still_show_it(tmp_path: Path) -> None:
    stack = EmbeddedStation(load_config(ROOT / "examples" / "station.toml"), tmp_path, 1, Scenario(),
                            Metrics()).start()
    try:
        core = stack.station.core
        core.couriers.add("c1", "SF", "Li", "1234")
        session = core.shelving.open_session("c1", "free")["session_id"]
        code_a = _shelve(stack, session, "SF1000000000001", "13800000001", "2-1-01")
        code_b = _shelve(stack, session, "SF1000000000002", "13800000002", "1-1-01")
        core.shelving.close_session(session, "c1")

        a = core.pickup.enter_with_code(code_a)
        deadline = time.monotonic() + 5
        while a.colour not in _lit(stack).get("2-1-01", ()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert a.colour in _lit(stack)["2-1-01"]

        # shelf-2 stops hearing commands for a moment (lost on the network; the link retries)
        shelf2 = stack.devices.controllers["shelf-2"]
        shelf2.net = lambda direction, topic, payload, deliver: (
            None if direction == "in" else deliver(payload))
        stack.devices.shelf_hals["shelf-2"].sensor(1, 1).take()  # A takes the parcel from 2-1-01
        assert core.exit.check(["SF1000000000001"]).allowed

        b = core.pickup.enter_with_code(code_b)
        lit = _lit(stack)
        wrong = [s for s, colours in lit.items() if b.colour in colours and s not in b.slots]
        assert not wrong, f"customer B ({b.colour}) sees {wrong} lit in their colour: {lit}"
    finally:
        stack.stop()
