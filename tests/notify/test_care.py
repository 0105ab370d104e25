"""Reminders, expiry notices and pickup confirmations through the real outbox (#19.1, #19.2).

Each message is decided in the transaction that records it; the crash tests kill a child
with SIGKILL right after that commit, before any dispatcher ran, and check that the restarted
station neither loses nor repeats it."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from station.config import Secrets
from station.notify import Dispatcher, StationInfo, WebhookSender

from .care_station import DAY, CareStation, build
from .receiver import WebhookReceiver

ROOT = Path(__file__).resolve().parents[2]
PHONE = "13812345678"


def sf(n: int) -> str:
    return f"SF{n:013d}"


@pytest.fixture
def st(tmp_path: Path, secrets: Secrets) -> CareStation:
    s = build(tmp_path, secrets)
    yield s
    s.store.close()


def test_each_reminder_goes_once_at_its_offset_then_the_expiry_notices(st: CareStation) -> None:
    st.shelve(sf(1), PHONE)
    assert st.tick(2 * DAY - 10)["reminders_queued"] == 0
    assert st.tick(20)["reminders_queued"] == 1
    assert st.tick(1)["reminders_queued"] == 0 and st.tick(DAY)["reminders_queued"] == 0
    assert st.kinds() == ["pickup_code", "reminder"]
    # 12 h before the end (7 days of retention)
    assert st.tick(7 * DAY - 3 * DAY - DAY / 2 - 30)["reminders_queued"] == 0
    assert st.tick(60)["reminders_queued"] == 1
    assert st.tick(60)["reminders_queued"] == 0
    reminder = st.messages()[-1]
    assert reminder.kind == "reminder" and reminder.phone and reminder.phone.endswith(PHONE)
    assert reminder.code is None  # the station keeps only the code's digest
    done = st.tick(DAY)
    assert done["parcels_expired"] == 1 and done["reminders_queued"] == 0
    # the gateway was down all along: the reminders still waiting are withdrawn with the expiry
    assert st.kinds() == ["pickup_code", "expired", "carrier_return"]
    assert st.kinds("withdrawn") == [] and len([r for r in st.rows() if r["state"] == "withdrawn"]) == 2
    carrier = [r for r in st.rows() if r["subject"] == "carrier:SF"]
    assert len(carrier) == 1 and carrier[0]["channel"] == "webhook"
    assert st.messages()[-1].waybill == sf(1)
    notices = [r["notice"] for r in st.store.query(
        "SELECT notice FROM parcel_notices ORDER BY at")]
    assert notices[0] == "after:172800" and notices[1].startswith("before:43200@")
    assert notices[2:] == ["expired", "carrier_return"]
    # nothing personal in clear in the log
    log = json.dumps(st.store.query("SELECT type, data FROM events"))
    assert PHONE not in log and PHONE[-8:] not in log


def test_no_reminder_after_pickup_and_a_waiting_one_is_withdrawn(st: CareStation) -> None:
    _, code = st.shelve(sf(1), PHONE)
    st.shelve(sf(2), "13900001111")
    st.tick(2 * DAY + 1)
    assert st.kinds().count("reminder") == 2  # the gateway is down: both still pending
    st.core.pickup.enter_with_code(code)
    assert st.core.exit.check([sf(1)], wait=False).allowed
    states = {r["subject"]: r["state"] for r in st.rows()
              if r["state"] in ("withdrawn",)}
    assert len(states) == 1 and next(iter(states)).startswith("pcl_")
    assert len(st.store.query("SELECT * FROM events WHERE type = 'notify.withdrawn'")) == 1
    # the picked-up parcel is never reminded again, the other one still is
    st.tick(4 * DAY + DAY / 2 - 1)
    assert [m.kind for m in st.messages("pending")].count("reminder") == 2
    picked = st.store.query_one("SELECT id FROM parcels WHERE waybill = ?", (sf(1),))["id"]
    assert st.store.query("SELECT notice FROM parcel_notices WHERE parcel_id = ?", (picked,)) == [
        {"notice": "after:172800"}]


def test_the_notice_key_refuses_a_second_decision(st: CareStation) -> None:
    st.shelve(sf(1), PHONE)
    st.tick(2 * DAY + 1)
    pid = st.store.query_one("SELECT id FROM parcels")["id"]
    from station.flows.care import _record
    before = len(st.rows())
    with pytest.raises(sqlite3.IntegrityError), st.store.transaction() as tx:
        st.outbox.enqueue(tx, "sms", pid, st.messages()[-1])
        _record(tx, pid, "after:172800", None)
    assert len(st.rows()) == before  # the second row rolled back with its event


def test_pickup_confirmation_one_message_counting_the_parcels(st: CareStation) -> None:
    _, code = st.shelve(sf(1), PHONE)
    st.shelve(sf(2), PHONE, "M")
    st.core.pickup.enter_with_code(code)
    assert st.core.exit.check([sf(1), sf(2)], wait=False).allowed
    conf = [m for m in st.messages() if m.kind == "picked_up"]
    assert len(conf) == 1 and conf[0].count == 2
    assert len(st.store.query("SELECT * FROM events WHERE type = 'pickup.confirmation.queued'")) == 1


def test_pickup_confirmation_off_for_a_carrier(st: CareStation) -> None:
    sid = st.core.shelving.open_session("z1", "guided")["session_id"]
    r = st.core.shelving.scan(sid, "ZT000000000001", PHONE, "S")
    st.clock.advance(0.1)
    from station.domain.layout import SlotAddress
    a = SlotAddress.parse(r.slot)
    st.core.on_device_event(st.ctx.device_of(a), "placement",
                            {"row": a.row, "col": a.col, "action": "put"})
    code = st.messages()[-1].code
    st.core.pickup.enter_with_code(code)
    assert st.core.exit.check(["ZT000000000001"], wait=False).allowed
    assert "picked_up" not in st.kinds()


def _child(tmp_path: Path, secrets_file: Path, now: float, action: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.notify.care_station", str(tmp_path), str(secrets_file),
         repr(now), action], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr  # killed right after the decision committed
    assert "decided" in proc.stdout


def _dispatch(st: CareStation, receiver: WebhookReceiver) -> None:
    sender = WebhookSender(receiver.url, StationInfo("Riverside"), timeout_s=10)
    Dispatcher(st.outbox, [sender]).run_once(st.clock())


def test_a_crash_between_deciding_and_sending_a_reminder(
        tmp_path: Path, secrets: Secrets, secrets_file: Path, receiver: WebhookReceiver) -> None:
    st = build(tmp_path, secrets)
    st.shelve(sf(1), PHONE)
    _dispatch(st, receiver)  # the pickup code went out
    now = st.clock() + 2 * DAY + 1
    st.store.close()
    _child(tmp_path, secrets_file, now, "tick")
    st = build(tmp_path, secrets, now)
    try:
        assert st.kinds() == ["reminder"]  # the decision and its row survived the crash
        assert st.tick(1)["reminders_queued"] == 0  # and the restarted station does not repeat it
        _dispatch(st, receiver)
        reminders = [b for b in receiver.bodies if b["kind"] == "reminder"]
        assert len(reminders) == 1 and st.kinds() == []
        assert st.tick(60)["reminders_queued"] == 0
    finally:
        st.store.close()


def test_a_crash_between_deciding_and_sending_a_pickup_confirmation(
        tmp_path: Path, secrets: Secrets, secrets_file: Path, receiver: WebhookReceiver) -> None:
    st = build(tmp_path, secrets)
    _, code = st.shelve(sf(1), PHONE)
    st.shelve(sf(2), PHONE, "M")
    st.core.pickup.enter_with_code(code)
    _dispatch(st, receiver)
    now = st.clock() + 5
    st.store.close()
    _child(tmp_path, secrets_file, now, f"exit:{sf(1)},{sf(2)}")
    st = build(tmp_path, secrets, now)
    try:
        assert st.kinds() == ["picked_up"]
        assert {r["state"] for r in st.store.query("SELECT state FROM parcels")} == {"picked_up"}
        _dispatch(st, receiver)
        conf = [b for b in receiver.bodies if b["kind"] == "picked_up"]
        assert len(conf) == 1 and conf[0]["count"] == 2 and conf[0]["to"]
        assert st.tick(3 * DAY)["reminders_queued"] == 0
    finally:
        st.store.close()


# --- extension (#19.3) -------------------------------------------------------------------


def test_a_customer_extends_once_and_the_reminder_before_the_end_moves(st: CareStation) -> None:
    from station.domain.codes import PickupCode
    from station.flows.errors import FlowError
    _, code = st.shelve(sf(1), PHONE)
    pid = st.store.query_one("SELECT id, deadline FROM parcels")
    st.tick(7 * DAY - DAY / 2 + 1)  # the reminder 12 h before the first deadline
    assert st.kinds().count("reminder") == 2
    r = st.core.extensions.by_customer(PickupCode.parse(code), "kiosk")
    assert r["deadline"] == pid["deadline"] + 2 * DAY and r["by"] == "customer"
    # the waiting reminders naming the old deadline are withdrawn; a new one falls due later
    assert st.kinds().count("reminder") == 0
    assert st.tick(60)["parcels_expired"] == 0 and st.tick(DAY)["reminders_queued"] == 0
    assert st.tick(DAY)["reminders_queued"] == 1
    with pytest.raises(FlowError) as exc:
        st.core.extensions.by_customer(PickupCode.parse(code), "kiosk")
    assert exc.value.code == "already_extended"
    # the operator may extend it again
    assert st.core.extensions.by_operator(pid["id"], 3600, "op")["deadline"] == r["deadline"] + 3600
    ext = st.store.query("SELECT actor, data FROM events WHERE type = 'parcel.extended'")
    assert [json.loads(e["data"])["by"] for e in ext] == ["customer", "operator"]
    assert st.tick(DAY / 2 + 3600 - 120)["parcels_expired"] == 0  # 61 s past 8.5 days now
    assert st.tick(120)["parcels_expired"] == 1


def test_no_customer_extension_when_the_station_is_short_of_space(
        tmp_path: Path, secrets: Secrets) -> None:
    from station.domain.codes import PickupCode
    from station.flows.errors import AuthFailed, FlowError
    st = build(tmp_path, secrets, extension_min_free_ratio=1.0)
    try:
        _, code = st.shelve(sf(1), PHONE)
        with pytest.raises(FlowError) as exc:
            st.core.extensions.by_customer(PickupCode.parse(code), "kiosk")
        assert exc.value.code == "short_of_space"
        with pytest.raises(AuthFailed):  # a wrong code counts as a guess
            st.core.extensions.by_customer(PickupCode.parse(code[:-1] + str((int(code[-1]) + 1) % 10)),
                                           "kiosk")
        assert st.store.query("SELECT kind FROM auth_failures") != []
        assert not st.store.query("SELECT 1 FROM events WHERE type = 'parcel.extended'")
    finally:
        st.store.close()
