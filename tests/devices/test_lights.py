"""Shelf lights end to end: DeviceLink -> Mosquitto -> shelf firmware -> ack + retained state."""

from __future__ import annotations

from station.devices.link import Light

from .conftest import wait_until

RED = Light(("#FF0000",), "solid", 30.0)
BLUE = Light(("#0000FF", "#00FF00"), "alternate", 30.0)


def lit_slots(state: dict) -> dict[tuple[int, int], tuple[tuple[str, ...], str]]:
    return {(s["row"], s["col"]): (tuple(s["colours"]), s["pattern"]) for s in state["lights"]}


def expected(lights: dict) -> dict:
    return {rc: (light.colours, light.pattern) for rc, light in lights.items()}


def test_light_a_slot_then_clear_it(cfg, secrets, fleet, make_link, events):
    shelf = fleet.shelf("shelf-1")
    link = make_link(cfg, secrets)
    assert link.wait_online(["shelf-1"], 5)
    out = link.set_lights("shelf-1", {(2, 3): RED}).wait(5)
    assert out.status == "acked", out
    assert shelf.hal.led(2, 3).colours == ("#FF0000",)
    state = link.wait_reported("shelf-1", lambda s: lit_slots(s) == {(2, 3): (("#FF0000",), "solid")})
    assert state is not None
    out = link.set_lights("shelf-1", {(2, 3): None}).wait(5)
    assert out.status == "acked" and out.op == "lights.clear"
    assert not shelf.hal.led(2, 3).lit
    assert link.wait_reported("shelf-1", lambda s: s["lights"] == []) is not None
    assert link.desired_lights("shelf-1") == {}
    acked = events.of("command.acked", "shelf-1")
    assert [e.data["op"] for e in acked] == ["lights.set", "lights.clear"]


def test_batch_of_fifty_slots_all_acked_and_reported(cfg, secrets, fleet, make_link, events):
    shelf = fleet.shelf("shelf-1")
    link = make_link(cfg, secrets)
    assert link.wait_online(["shelf-1"], 5)
    everything = {(r, c): (RED if (r + c) % 2 else BLUE) for r in range(1, 6) for c in range(1, 11)}
    one_batch = link.set_lights("shelf-1", everything).wait(5)
    assert one_batch.status == "acked"
    singles = [link.set_lights("shelf-1", {rc: BLUE}) for rc in everything]
    assert all(h.wait(5).status == "acked" for h in singles)
    want = expected({rc: BLUE for rc in everything})
    assert link.wait_reported("shelf-1", lambda s: lit_slots(s) == want) is not None
    assert {rc: (led.colours, led.pattern) for rc, led in shelf.hal.lit().items()} == want
    assert len(events.of("command.acked", "shelf-1")) == 51
    assert expected(link.desired_lights("shelf-1")) == want


def test_replace_lights_leaves_only_the_given_slots_lit(cfg, secrets, fleet, make_link):
    shelf = fleet.shelf("shelf-1")
    link = make_link(cfg, secrets)
    assert link.wait_online(["shelf-1"], 5)
    assert link.set_lights("shelf-1", {(1, 1): RED, (1, 2): RED}).wait(5).ok
    assert link.replace_lights("shelf-1", {(5, 10): BLUE}).wait(5).ok
    assert set(shelf.hal.lit()) == {(5, 10)}
    assert set(link.desired_lights("shelf-1")) == {(5, 10)}


def test_a_light_goes_dark_by_itself_after_its_ttl(cfg, secrets, fleet, make_link):
    shelf = fleet.shelf("shelf-1")
    link = make_link(cfg, secrets)
    assert link.wait_online(["shelf-1"], 5)
    assert link.set_lights("shelf-1", {(3, 3): Light(("#FFFFFF",), "blink", 0.2)}).wait(5).ok
    assert shelf.hal.led(3, 3).lit
    wait_until(lambda: not shelf.hal.led(3, 3).lit, 5, "ttl expiry")
    wait_until(lambda: link.desired_lights("shelf-1") == {}, 5, "desired expiry")


def test_placement_is_debounced_and_reported_once(cfg, secrets, fleet, make_link, events):
    shelf = fleet.shelf("shelf-1")
    link = make_link(cfg, secrets)
    assert link.wait_online(["shelf-1"], 5)
    sensor = shelf.hal.sensor(4, 7)
    sensor.put(); sensor.take(); sensor.put()  # bounce within the debounce window
    evt = events.wait("placement", "shelf-1")
    assert (evt.data["row"], evt.data["col"], evt.data["action"]) == (4, 7, "put")
    assert evt.data["count"] == 1 and evt.data["occupied"] is True
    sensor.take()
    evt = events.wait("placement", "shelf-1", lambda e: e.data["action"] == "take")
    assert evt.data["occupied"] is False
    assert len(events.of("placement", "shelf-1")) == 2
