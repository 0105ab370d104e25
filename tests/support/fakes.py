"""In-memory stand-ins for the device link and the outbox, for flow unit tests.

End-to-end tests use the real link, firmware and Mosquitto; these let a thousand random
operations run in a second."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from station.domain.lights import LightSpec


@dataclass
class FakeOutcome:
    status: str = "acked"
    reason: str | None = None


@dataclass
class FakeHandle:
    outcome: FakeOutcome

    def wait(self, timeout: float | None = None) -> FakeOutcome:
        return self.outcome


@dataclass
class FakeDevices:
    online: dict[str, bool] = field(default_factory=dict)
    lights: dict[str, dict[tuple[int, int], LightSpec]] = field(default_factory=dict)
    unlocks: list[str] = field(default_factory=list)
    door_status: str = "acked"

    def replace_lights(self, device: str, lights: Mapping[tuple[int, int], LightSpec]) -> FakeHandle:
        self.lights[device] = dict(lights)
        return FakeHandle(FakeOutcome())

    def unlock(self, door: str, pulse_s: float | None = None) -> FakeHandle:
        if self.door_status == "acked":
            self.unlocks.append(door)
        return FakeHandle(FakeOutcome(self.door_status))

    def is_online(self, device: str) -> bool:
        return self.online.get(device, True)

    def lit(self) -> dict[str, LightSpec]:
        """Every lit slot as printed address -> spec (shelf number resolved by the caller)."""
        return {f"{dev}:{r}-{c:02d}": spec for dev, m in self.lights.items() for (r, c), spec in m.items()}


@dataclass
class FakeOutbox:
    messages: list[dict[str, Any]] = field(default_factory=list)

    def enqueue(self, tx: Any, channel: str, subject: str, message: Mapping[str, Any]) -> str:
        self.messages.append({"channel": channel, "subject": subject, **message})
        return f"msg{len(self.messages)}"
