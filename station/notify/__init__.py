"""Notifications: a durable, encrypted outbox and the senders that empty it (ADR 0030)."""

from .messages import Notification, StationInfo, render_text
from .outbox import Dispatcher, DispatchReport, Outbox, OutboxRow, PayloadError
from .senders import ConsoleSender, MqttSender, Sender, SendError, WebhookSender, build_senders

__all__ = [
    "ConsoleSender",
    "DispatchReport",
    "Dispatcher",
    "MqttSender",
    "Notification",
    "Outbox",
    "OutboxRow",
    "PayloadError",
    "SendError",
    "Sender",
    "StationInfo",
    "WebhookSender",
    "build_senders",
    "render_text",
]
