"""Helpers for assertions on the real services."""

from __future__ import annotations

import base64
import secrets

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from channels.registry import CHANNELS


def queue_depths() -> dict[str, int]:
    """Messages waiting on each channel queue of the test vhost (passive declare: creates nothing)."""
    from notify.celery import app

    depths = {}
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for name in CHANNELS:
            depths[name] = channel.queue_declare(queue=name, passive=True).message_count
    return depths


def db_counts() -> dict[str, int]:
    from notify.models import Delivery, DeliveryLog, Device, Notification, Preference, Recipient

    return {m.__name__: m.objects.count() for m in (Notification, Delivery, DeliveryLog, Recipient, Device, Preference)}


def browser_subscription(endpoint: str = "https://push.example.net/wp/abc") -> dict:
    """A Web Push subscription with a real P-256 public key and auth secret, as a browser makes."""
    key = ec.generate_private_key(ec.SECP256R1())
    point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    b64 = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=").decode()  # noqa: E731
    return {"endpoint": endpoint, "keys": {"p256dh": b64(point), "auth": b64(secrets.token_bytes(16))}}
