"""Found by the simulator (examples/day.toml, seed 1: `parcels_bound_to_other_slot`).

A customer lifts a parcel from a slot by mistake and puts it back. If a courier's guided
scan is waiting with that slot as its target, the put-back is taken as the courier's
placement (Shelving.candidate_for_put matches the target slot first): the new waybill is
bound to a slot it is not in, and its recipient is sent there. The sensor cannot tell whose
parcel went in, but a put right after an unexpected take in the same slot is most likely a
put-back."""

from __future__ import annotations

import time
from pathlib import Path

from tests.support.stack import LiveStation


def test_a_put_back_does_not_bind_a_waiting_scan(tmp_path: Path) -> None:
    with LiveStation(tmp_path) as ls:
        core = ls.core
        core.couriers.add("c1", "SF", "Li", "1234")
        session = core.shelving.open_session("c1", "guided")["session_id"]
        first = core.shelving.scan(session, "SF1000000000001", "13800000001", "S")
        ls.put(first.slot)
        ls.wait_code_for("13800000001")
        second = core.shelving.scan(session, "SF1000000000002", "13800000001", "S")
        # one recipient's parcels go together while the slot has room (capacity 2)
        assert second.slot == first.slot, f"the station chose {second.slot}, not {first.slot}"
        ls.take(first.slot)          # a customer lifts the parcel there by mistake ...
        time.sleep(0.3)
        ls.put(first.slot)           # ... and puts it back; the courier has not moved yet
        time.sleep(0.5)
        item = next(i for i in core.shelving.session(session)["items"] if i["id"] == second.pending_id)
        assert item["state"] == "waiting", "the put-back was bound as the courier's parcel"
