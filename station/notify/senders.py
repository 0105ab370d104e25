"""Ways out of the station for a notification: console, HTTP webhook (SMS gateway), MQTT.

A sender either returns (the message was handed over and acknowledged) or raises
`SendError`. The error's message is safe to store and log: it never carries the phone
number, the code or a gateway URL that might hold an API key, only a short class of fault.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Protocol

import httpx

from .messages import Notification, StationInfo, gateway_body, summary_line

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

    from station.config import NotifySection, SenderConfig

log = logging.getLogger("station.notify")


class SendError(Exception):
    """Delivery failed this time; the dispatcher will retry. `str()` is safe to persist.

    `channel_down` says the way out itself is broken (gateway unreachable, 5xx, broker
    offline), so the dispatcher pauses the whole sender; False means only this message was
    refused (a 4xx about this number) and the other rows keep going.
    """

    def __init__(self, message: str, *, channel_down: bool = True) -> None:
        super().__init__(message)
        self.channel_down = channel_down


class Sender(Protocol):
    """Anything that can hand one notification over, synchronously and acknowledged."""

    @property
    def name(self) -> str: ...

    def send(self, outbox_id: str, notification: Notification) -> None: ...


class ConsoleSender:
    """For the demo and development: one log line per message instead of an SMS.

    The phone number is only masked, since logs outlive the parcel and are read by people who
    are not its owner. The pickup code and the one-time code are withheld unless
    `show_codes`: a code copied from a service log opened the door (#14.4). Showing them is
    the demo's stand-in for the SMS, and `station run` refuses it (ADR 0081).
    """

    def __init__(self, station: StationInfo, *, name: str = "console",
                 logger: logging.Logger | None = None, show_codes: bool = False) -> None:
        self._station = station
        self._name = name
        self._log = logger or log
        self._show_codes = show_codes

    @property
    def name(self) -> str:
        return self._name

    def send(self, outbox_id: str, notification: Notification) -> None:
        self._log.info("%s", summary_line(outbox_id, notification, self._station,
                                          show_codes=self._show_codes))


class WebhookSender:
    """A generic SMS gateway: POST JSON, any 2xx is accepted, anything else is a failure.

    The outbox id travels as `id` and as the `Idempotency-Key` header so a gateway that
    honours it sends one SMS however often we retry.
    """

    def __init__(self, url: str, station: StationInfo, *, name: str = "webhook",
                 timeout_s: float = 10.0, client: httpx.Client | None = None) -> None:
        self._url = url
        self._station = station
        self._name = name
        self._client = client or httpx.Client(timeout=timeout_s)
        self._owns_client = client is None

    @property
    def name(self) -> str:
        return self._name

    def send(self, outbox_id: str, notification: Notification) -> None:
        body = gateway_body(outbox_id, notification, self._station)
        try:
            response = self._client.post(
                self._url, json=body, headers={"Idempotency-Key": outbox_id}
            )
        except httpx.TimeoutException:
            raise SendError("webhook: timeout") from None
        except httpx.TransportError as exc:
            raise SendError(f"webhook: {type(exc).__name__}") from None
        status = response.status_code
        if not 200 <= status < 300:
            row_only = 400 <= status < 500 and status not in (408, 429)
            raise SendError(f"webhook: HTTP {status}", channel_down=not row_only)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


class MqttSender:
    """Publish QoS 1 on the station's own broker, for a local SMS modem or a fleet relay.

    Takes the station's connected client rather than its own, so the station keeps one
    connection per broker (DESIGN: a single owner for each external connection). When that
    client is offline the send fails at once instead of queueing inside paho: the outbox is
    the queue, and paho's would only replay stale duplicates after a reconnect.
    """

    def __init__(self, client: mqtt.Client, topic: str, station: StationInfo, *,
                 name: str = "mqtt", timeout_s: float = 5.0) -> None:
        self._client = client
        self._topic = topic
        self._station = station
        self._name = name
        self._timeout_s = timeout_s

    @property
    def name(self) -> str:
        return self._name

    def send(self, outbox_id: str, notification: Notification) -> None:
        if not self._client.is_connected():
            raise SendError("mqtt: not connected")
        payload = json.dumps(
            gateway_body(outbox_id, notification, self._station), ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        info = self._client.publish(self._topic, payload, qos=1, retain=False)
        try:
            info.wait_for_publish(self._timeout_s)
        except (RuntimeError, ValueError):
            raise SendError(f"mqtt: publish refused (rc {int(info.rc)})") from None
        if not info.is_published():
            raise SendError("mqtt: no PUBACK in time")


def default_mqtt_topic(station_id: str) -> str:
    return f"ps/v1/{station_id}/station/notify"


def build_senders(
    notify: NotifySection,
    station: StationInfo,
    station_id: str,
    *,
    mqtt_client: mqtt.Client | None = None,
    http_client: httpx.Client | None = None,
) -> list[Sender]:
    """Senders in configuration order; the first one is the default channel.

    Names are the sender kind, with `-2`, `-3` ... for a second sender of the same kind, so
    a row's channel stays meaningful when the configuration is reordered.
    """
    senders: list[Sender] = []
    seen: dict[str, int] = {}
    for cfg in notify.senders:
        seen[cfg.kind] = seen.get(cfg.kind, 0) + 1
        name = cfg.kind if seen[cfg.kind] == 1 else f"{cfg.kind}-{seen[cfg.kind]}"
        senders.append(_build_one(cfg, name, station, station_id, mqtt_client, http_client))
    return senders


def _build_one(
    cfg: SenderConfig, name: str, station: StationInfo, station_id: str,
    mqtt_client: mqtt.Client | None, http_client: httpx.Client | None,
) -> Sender:
    if cfg.kind == "console":
        return ConsoleSender(station, name=name, show_codes=cfg.show_codes)
    if cfg.kind == "webhook":
        assert cfg.url is not None  # SenderConfig refuses a webhook without a url
        return WebhookSender(cfg.url, station, name=name, client=http_client)
    if mqtt_client is None:
        raise ValueError("an mqtt notification sender needs the station's MQTT client")
    return MqttSender(mqtt_client, cfg.topic or default_mqtt_topic(station_id), station, name=name)

