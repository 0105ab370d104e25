"""A station on fakes for devices but the REAL outbox, for the customer-care tests (#19).

Also a child process, to be killed with SIGKILL right after a decision commits:

    python -m tests.notify.care_station DIR SECRETS_FILE NOW ACTION
"""

from __future__ import annotations

import os
import random
import signal
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from station.config import Secrets, StationConfig, load_secrets, parse_config
from station.flows.context import Ctx
from station.flows.core import StationCore
from station.notify import Notification, Outbox
from station.store.db import Store
from tests.conftest import EXAMPLE_CONFIG
from tests.flows.harness import T0, FakeClock
from tests.support.fakes import FakeDevices

DAY = 86400.0


def care_config(tmp_path: Path, **care: Any) -> StationConfig:
    data = tomllib.loads(EXAMPLE_CONFIG.read_text("utf-8"))
    data["station"].update(database=str(tmp_path / "station.db"),
                           snapshots_dir=str(tmp_path / "snapshots"))
    data["care"] = {"remind_after_s": [2 * DAY], "remind_before_s": [DAY / 2], **care}
    for c in data["carriers"]:
        if c["name"] == "ZTO":
            c["pickup_confirmation"] = False
        if c["name"] == "SF":
            c["notify_sender"] = "webhook"
    return parse_config(data, EXAMPLE_CONFIG)


@dataclass
class CareStation:
    core: StationCore
    ctx: Ctx
    store: Store
    outbox: Outbox
    clock: FakeClock

    def tick(self, seconds: float = 0.0) -> dict[str, int]:
        self.clock.advance(seconds)
        return self.core.tick(self.clock())

    def shelve(self, waybill: str, phone: str, size: str = "S") -> tuple[str, str]:
        from station.domain.layout import SlotAddress
        sid = self.core.shelving.open_session("c1", "guided")["session_id"]
        r = self.core.shelving.scan(sid, waybill, phone, size)
        self.clock.advance(0.1)
        a = SlotAddress.parse(r.slot)
        self.core.on_device_event(self.ctx.device_of(a), "placement",
                                  {"row": a.row, "col": a.col, "action": "put"})
        code = [m for m in self.messages() if m.kind == "pickup_code"][-1].code
        assert code is not None
        return r.slot, code

    def rows(self) -> list[dict[str, Any]]:
        return self.store.query("SELECT * FROM outbox ORDER BY created_at, rowid")

    def messages(self, state: str | None = None) -> list[Notification]:
        return [self.outbox.open_payload(r["id"]) for r in self.rows()
                if (state is None or r["state"] == state) and r["payload"]]

    def kinds(self, state: str = "pending") -> list[str]:
        return [m.kind for m in self.messages(state)]


def build(tmp_path: Path, secrets: Secrets, t: float = T0, **care: Any) -> CareStation:
    config = care_config(tmp_path, **care)
    clock = FakeClock(t)
    store = Store(config.station.database, clock=clock).open()
    outbox = Outbox(store, secrets.encryption_key, clock)
    ctx = Ctx(config, secrets, store, FakeDevices(), outbox, clock=clock, mono=clock.mono,
              boot_id="test-boot")
    ctx.rng = random.Random(1)  # type: ignore[assignment]
    st = CareStation(StationCore(ctx), ctx, store, outbox, clock)
    if not store.query_one("SELECT 1 FROM couriers WHERE id = 'c1'"):
        st.core.couriers.add("c1", "SF", "Courier c1", "1234")
        st.core.couriers.add("z1", "ZTO", "Courier z1", "1234")
    return st


def main(argv: list[str]) -> None:
    """Decide (a tick, or an exit), let it commit, then die before any dispatcher runs."""
    directory, secrets_file, now, action = argv
    st = build(Path(directory), load_secrets(Path(secrets_file), env={}), float(now))
    if action == "tick":
        st.core.tick(st.clock())
    else:  # exit:WAYBILL,WAYBILL
        st.core.exit.check(action.split(":", 1)[1].split(","), wait=False)
    print("decided", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main(sys.argv[1:])
