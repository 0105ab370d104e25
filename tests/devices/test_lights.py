"""Shelf lights end to end: DeviceLink -> Mosquitto -> shelf firmware -> ack + retained state."""

from __future__ import annotations

from station.devices.link import Light

from .conftest import taken, wait_until

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
    taken(link)
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
    taken(link)
    acked = events.of("command.acked", "shelf-1")
    # singles queued behind the one in flight were folded into one replace: every handle is
    # accounted for, by its own ack or as superseded by the command that carried it
    carried = sum(len(e.data.get("superseded", [])) for e in acked)
    assert len(acked) + carried == 51 and len(acked) < 51
    assert expected(link.desired_lights("shelf-1")) == want


def test_lights_queued_behind_a_slow_shelf_are_sent_once_as_the_newest_picture(
        cfg, secrets, fleet, make_link, events):
    """While a shelf is away the link keeps one lights command in flight; the changes made
    meanwhile travel as one replace (docs/adr/0016), and each caller still gets an outcome."""
    link = make_link(cfg, secrets)
    first = link.set_lights("shelf-1", {(1, 1): RED})           # in flight, unanswered
    later = [link.set_lights("shelf-1", {(1, c): BLUE}) for c in range(2, 6)]
    later.append(link.set_lights("shelf-1", {(1, 3): None}))      # a clear folds in too
    later.append(link.replace_lights("shelf-1", {(2, 2): RED, (1, 4): BLUE}))
    assert not any(h.done() for h in [first, *later])
    shelf = fleet.shelf("shelf-1")
    assert first.wait(5).ok
    outcomes = [h.wait(5) for h in later]
    assert all(o.ok for o in outcomes)
    assert len({o.cmd_id for o in outcomes}) == 1, "the queued changes were sent one by one"
    assert {rc: (led.colours, led.pattern) for rc, led in shelf.hal.lit().items()} == \
        expected({(2, 2): RED, (1, 4): BLUE})
    # the outcome's event is taken on the delivery thread, maybe a moment after the waiters woke
    events.wait("command.acked", "shelf-1", lambda e: bool(e.data.get("superseded")))
    carrier = [e for e in events.of("command.acked", "shelf-1") if e.data.get("superseded")]
    assert len(carrier) == 1 and len(carrier[0].data["superseded"]) == len(later) - 1


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
