"""Found by the simulator (max speed, 4 couriers and 6 customers inside: `wrong_slots_lit`).

The palette has 8 colours (domain/colours.py) and shelving sessions draw from it too. With a
ninth open session, allocate_colour hands out a colour that is already lit for somebody
else, so a customer walks to a slot lit "in their colour" that holds a courier's target or
another customer's parcel. DESIGN §1: several customers at once get different colours."""

from __future__ import annotations

from pathlib import Path

from tests.support.stack import LiveStation


def test_a_customer_never_gets_a_colour_that_is_already_lit(tmp_path: Path) -> None:
    from station.flows.errors import FlowError

    with LiveStation(tmp_path) as ls:
        core = ls.core
        for i in range(8):
            core.couriers.add(f"c{i}", "SF", f"C{i}", "1234")
        sessions = [core.shelving.open_session(f"c{i}") for i in range(8)]
        scan = core.shelving.scan(sessions[0]["session_id"], "SF1000000000009", "13800000009", "S")
        ls.put(scan.slot)
        code = ls.wait_code_for("13800000009")
        for i, s in enumerate(sessions):  # every courier has a parcel scanned: its slot lit
            core.shelving.scan(s["session_id"], f"SF20000000000{i:02d}", f"139000000{i:02d}", "S")
        try:
            entry = core.pickup.enter_with_code(code)
        except FlowError:
            return  # refusing ("please wait") would be a fix too
        lit = ls.lit()
        wrong = sorted(slot for slot, colours in lit.items()
                       if entry.colour in colours and slot not in entry.slots)
        assert not wrong, f"customer ({entry.colour}) sees {wrong} lit in their colour"
