"""Reporting and refusing at the kiosk (#19.4), on fakes: alarms with slot, session and
snapshot; a refused parcel becomes `refused` in its slot, joins the return run, and the
customer leaves with the rest."""

from __future__ import annotations

import json

import pytest

from station.flows.errors import FlowError

from .harness import Station, phone, sf_waybill

SNAP = "ab" * 32


def _two_parcels(station: Station) -> tuple[str, str, str, str]:
    sid = station.core.shelving.open_session("c1", "guided")["session_id"]
    s1, code = station.shelve(sf_waybill(1), phone(1), "S", session_id=sid)
    s2, _ = station.shelve(sf_waybill(2), phone(1), "M", session_id=sid)
    session = station.core.pickup.enter_with_code(code).session_id
    return session, s1, s2, code


def test_each_report_raises_an_alarm_with_slot_session_and_snapshot(station: Station) -> None:
    session, s1, s2, _ = _two_parcels(station)
    for problem in ("slot_empty", "not_mine"):
        r = station.core.reports.report(session, s1, problem, snapshot=SNAP)
        assert r["alarm_id"] and not r["refused"]
    alarms = station.store.query("SELECT kind, subject FROM alarms ORDER BY raised_at")
    assert [(a["kind"], a["subject"]) for a in alarms] == [("kiosk.slot_empty", s1), ("kiosk.not_mine", s1)]
    raised = [json.loads(e["data"]) for e in station.events("alarm.raised")]
    assert all(d["session_id"] == session and d["slot"] == s1 and d["snapshot"] == SNAP for d in raised)
    assert [e["snapshot"] for e in station.events("pickup.reported")] == [SNAP, SNAP]
    with pytest.raises(FlowError) as exc:
        station.core.reports.report(session, "1-1-09", "slot_empty")
    assert exc.value.code == "not_your_slot"
    with pytest.raises(FlowError):
        station.core.reports.report("pks_nope", s1, "slot_empty")


def test_a_damaged_parcel_left_in_its_slot_is_refused_and_goes_back(station: Station) -> None:
    session, s1, s2, _ = _two_parcels(station)
    r = station.core.reports.report(session, s2, "damaged")
    assert r["refused"] and r["parcel_id"]
    assert station.store.query_one("SELECT state FROM parcels WHERE waybill = ?",
                                   (sf_waybill(2),))["state"] == "refused"
    # the customer leaves with the rest
    station.take(s1)
    assert station.core.exit.check([sf_waybill(1)]).allowed
    closed = station.store.query_one("SELECT reason FROM sessions WHERE id = ?", (session,))
    assert closed["reason"] == "completed"
    # the refused parcel is in the carrier's return run
    run = station.core.returns.start_return_run("c1")
    assert [p["waybill"] for p in run["parcels"]] == [sf_waybill(2)]
    station.take(s2)
    assert station.store.query_one("SELECT state FROM parcels WHERE waybill = ?",
                                   (sf_waybill(2),))["state"] == "returned"


def test_a_damaged_parcel_taken_then_put_back_is_refused_on_the_put(station: Station) -> None:
    session, s1, s2, _ = _two_parcels(station)
    station.take(s2)
    r = station.core.reports.report(session, s2, "damaged")
    assert r["put_back_awaited"] and not r["refused"]
    station.put(s2)
    assert station.store.query_one("SELECT state FROM parcels WHERE waybill = ?",
                                   (sf_waybill(2),))["state"] == "refused"
    assert not station.store.query("SELECT 1 FROM alarms WHERE kind = 'slot.unexpected_put'")
    # shown at the exit, a refused parcel keeps it locked; with the rest it opens
    station.take(s1)
    assert station.core.exit.check([sf_waybill(1)]).allowed


def test_of_two_parcels_in_one_slot_the_one_named_by_its_waybill_is_refused(station: Station) -> None:
    """Both lifted from one slot: the kiosk reads the damaged one's label, so the station
    refuses that one when it is put back, and the other leaves through the exit."""
    sid = station.core.shelving.open_session("c1", "guided")["session_id"]
    s1, code = station.shelve(sf_waybill(1), phone(1), "S", session_id=sid)
    r = station.core.shelving.scan(sid, sf_waybill(2), phone(1), "S")
    assert r.slot == s1  # one recipient's parcels go together
    station.put(r.slot)
    session = station.core.pickup.enter_with_code(code).session_id
    station.take(s1)
    station.take(s1)
    with pytest.raises(FlowError) as exc:
        station.core.reports.report(session, s1, "damaged", waybill=sf_waybill(3))
    assert exc.value.code == "not_your_parcel"
    before = len(station.events("pickup.reported"))
    with pytest.raises(FlowError) as exc:  # which of the two: asked, not guessed
        station.core.reports.report(session, s1, "damaged")
    assert exc.value.code == "which_parcel" and len(station.events("pickup.reported")) == before
    out = station.core.reports.report(session, s1, "damaged", waybill=sf_waybill(2))
    assert out["put_back_awaited"]
    station.put(s1)
    states = {r["waybill"]: r["state"] for r in station.store.query("SELECT waybill, state FROM parcels")}
    assert states == {sf_waybill(1): "shelved", sf_waybill(2): "refused"}
    assert station.core.exit.check([sf_waybill(1)]).allowed
    states = {r["waybill"]: r["state"] for r in station.store.query("SELECT waybill, state FROM parcels")}
    assert states == {sf_waybill(1): "picked_up", sf_waybill(2): "refused"}
