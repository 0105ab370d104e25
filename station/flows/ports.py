"""What the flows need from the outside world, as protocols the adapters satisfy.

The flows never import paho, OpenCV or httpx: the device link, the outbox and the vision
engine are handed in (bootstrap.py), and tests hand in fakes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from station.domain.lights import LightSpec


class Outcome(Protocol):
    @property
    def status(self) -> str: ...  # acked | refused | expired

    @property
    def reason(self) -> str | None: ...


class Handle(Protocol):
    def wait(self, timeout: float | None = None) -> Outcome: ...


class DevicePort(Protocol):
    def replace_lights(self, device: str, lights: Mapping[tuple[int, int], LightSpec]) -> Handle: ...

    def unlock(self, door: str, pulse_s: float | None = None) -> Handle: ...

    def is_online(self, device: str) -> bool: ...


class OutboxPort(Protocol):
    def enqueue(self, tx: Any, channel: str, subject: str, message: Mapping[str, Any]) -> str: ...


@dataclass(frozen=True)
class _NoAnswer:
    status: str = "expired"
    reason: str | None = "no_answer"


def outcome_of(handle: Handle, timeout: float) -> Outcome:
    """The command's outcome, or `expired` when none came in time: a door that does not
    answer is a door that did not open, never an exception in the middle of a flow."""
    try:
        return handle.wait(timeout)
    except TimeoutError:
        return _NoAnswer()
