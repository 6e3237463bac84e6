"""Ayrshare's signed webhooks in (verified, recorded once, applied to the directory) and passed on to the team's
backend through a durable outbox, signed per the Standard Webhooks spec."""

from .forwarder import DeliveryWorker, Forwarder, ForwardFailed
from .outbox import Delivery, Outbox
from .receiver import Receipt, WebhookReceiver, WebhookRefused
from .signature import BadSignature, verify

__all__ = [
    "BadSignature",
    "Delivery",
    "DeliveryWorker",
    "ForwardFailed",
    "Forwarder",
    "Outbox",
    "Receipt",
    "WebhookReceiver",
    "WebhookRefused",
    "verify",
]
