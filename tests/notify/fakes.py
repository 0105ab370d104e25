"""A sender whose outcome the test scripts, recording what it was asked to send."""

from __future__ import annotations

from station.notify import Notification, SendError


class ScriptedSender:
    def __init__(self, name: str = "webhook") -> None:
        self._name = name
        self.down = False
        self.fail_ids: set[str] = set()
        self.attempts: list[str] = []
        self.delivered: list[tuple[str, Notification]] = []

    @property
    def name(self) -> str:
        return self._name

    def send(self, outbox_id: str, notification: Notification) -> None:
        self.attempts.append(outbox_id)
        if self.down:
            raise SendError(f"{self._name}: HTTP 503")
        if outbox_id in self.fail_ids:
            raise SendError(f"{self._name}: HTTP 400", channel_down=False)
        self.delivered.append((outbox_id, notification))
