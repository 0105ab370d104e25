"""A refused "leave without parcels" takes the exit camera's picture for its alarm, but a
camera that gives none must not hold the answer: the customer waits for it, and so does
everyone held at the exit with them (ADR 0167). The week scenario found a 3 s wait there."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from station.api.kiosk import ALARM_FRAME_WAIT_S, _exit_snapshot
from station.flows.errors import Unavailable


def _services(grab: Any, saved: list[bytes]) -> Any:
    def save(image: bytes) -> str:
        saved.append(image)
        return "snap-1"
    return SimpleNamespace(grab_document_frame=grab, save_snapshot=save)


def test_the_alarm_picture_waits_only_briefly_for_a_first_frame():
    asked: list[float] = []

    def grab(timeout: float = 3.0) -> bytes:
        asked.append(timeout)
        return b"jpeg"

    saved: list[bytes] = []
    take = _exit_snapshot(_services(grab, saved))
    assert take is not None and take() == "snap-1"
    assert saved == [b"jpeg"]
    assert asked == [ALARM_FRAME_WAIT_S]
    assert ALARM_FRAME_WAIT_S < 3.0   # the wait a waybill read from the camera may take


def test_a_camera_that_gives_no_picture_lets_the_alarm_go_without_one():
    def grab(timeout: float = 3.0) -> bytes:
        raise Unavailable("the document camera gives no picture", code="camera_unavailable")

    saved: list[bytes] = []
    take = _exit_snapshot(_services(grab, saved))
    assert take is not None and take() is None
    assert saved == []
