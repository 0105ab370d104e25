"""Ways out of the station for a notification: console, HTTP webhook (SMS gateway), MQTT.

A sender either returns (the message was handed over and acknowledged) or raises
`SendError`. The error's message is safe to store and log: it never carries the phone
number, the code or a gateway URL that might hold an API key, only a short class of fault.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import ssl
import threading
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

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


@dataclass(frozen=True)
class WebhookEndpoint:
    """A gateway URL taken apart once: the one check of it, for the configuration (which
    names the key) and for the sender alike."""

    https: bool
    host: str
    port: int | None
    target: str  # path and query
    auth_headers: dict[str, str]  # HTTP Basic from credentials in the URL, or nothing

    @classmethod
    def parse(cls, url: str) -> WebhookEndpoint:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("a webhook url must be http:// or https:// with a host")
        try:
            port = parts.port  # parsed only when read: "host:99999" fails here, not at start
        except ValueError as exc:
            raise ValueError(f"a webhook url's port: {exc}") from None
        auth = {}
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            auth["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        return cls(parts.scheme == "https", parts.hostname, port,
                   (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), auth)


class WebhookSender:
    """A generic SMS gateway: POST JSON, any 2xx is accepted, anything else is a failure.

    The outbox id travels as `id` and as the `Idempotency-Key` header so a gateway that
    honours it sends one SMS however often we retry.

    One kept-alive connection from the standard library (ADR 0163): the station sends one
    request at a time to one URL, and httpx's client cost three times the CPU per POST. A
    connection the gateway closed while idle is retried once on a fresh one (the idempotency
    key makes a repeat harmless). Credentials in the URL (`https://user:key@host/...`) go as
    HTTP Basic. The connection is direct: proxy variables in the environment are not read.
    """

    def __init__(self, url: str, station: StationInfo, *, name: str = "webhook",
                 timeout_s: float = 10.0) -> None:
        self._endpoint = WebhookEndpoint.parse(url)
        self._headers = {"Content-Type": "application/json", **self._endpoint.auth_headers}
        self._station = station
        self._name = name
        self._timeout_s = timeout_s
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()  # one connection: one request on it at a time

    @property
    def name(self) -> str:
        return self._name

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            e = self._endpoint
            if e.https:
                self._conn = http.client.HTTPSConnection(
                    e.host, e.port, timeout=self._timeout_s, context=ssl.create_default_context())
            else:
                self._conn = http.client.HTTPConnection(e.host, e.port, timeout=self._timeout_s)
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def send(self, outbox_id: str, notification: Notification) -> None:
        payload = json.dumps(gateway_body(outbox_id, notification, self._station),
                             ensure_ascii=False, separators=(",", ":")).encode()
        headers = {**self._headers, "Idempotency-Key": outbox_id}
        with self._lock:
            for fresh in (self._conn is None, True):
                conn = self._connection()
                try:
                    conn.request("POST", self._endpoint.target, body=payload, headers=headers)
                    response = conn.getresponse()
                    response.read()
                except TimeoutError:
                    self._drop()
                    raise SendError("webhook: timeout") from None
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                    self._drop()
                    if fresh:
                        raise SendError(f"webhook: {type(exc).__name__}") from None
                    continue  # the gateway had closed the kept-alive connection: once more
                except (OSError, http.client.HTTPException) as exc:
                    self._drop()
                    raise SendError(f"webhook: {type(exc).__name__}") from None
                if response.will_close:
                    self._drop()
                break
        status = response.status
        if not 200 <= status < 300:
            row_only = 400 <= status < 500 and status not in (408, 429)
            raise SendError(f"webhook: HTTP {status}", channel_down=not row_only)

    def close(self) -> None:
        with self._lock:
            self._drop()


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
        senders.append(_build_one(cfg, name, station, station_id, mqtt_client))
    return senders


def _build_one(
    cfg: SenderConfig, name: str, station: StationInfo, station_id: str,
    mqtt_client: mqtt.Client | None,
) -> Sender:
    if cfg.kind == "console":
        return ConsoleSender(station, name=name, show_codes=cfg.show_codes)
    if cfg.kind == "webhook":
        assert cfg.url is not None  # SenderConfig refuses a webhook without a url
        return WebhookSender(cfg.url, station, name=name)
    if mqtt_client is None:
        raise ValueError("an mqtt notification sender needs the station's MQTT client")
    return MqttSender(mqtt_client, cfg.topic or default_mqtt_topic(station_id), station, name=name)

