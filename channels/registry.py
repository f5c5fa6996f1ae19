"""One long-lived channel instance per worker process.

Celery's prefork pool forks workers after the parent imported the code, so clients (HTTP/2
connections, requests sessions, boto3 clients) must be created lazily in the child: the cache is
keyed by process id so that a forked child never reuses its parent's sockets.
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import Any, Callable, Mapping

from .base import Channel

#: channel name → "module:Class"
CHANNEL_CLASSES: dict[str, str] = {
    "apns": "channels.apns:APNsChannel",
    "fcm": "channels.fcm:FCMChannel",
    "webpush": "channels.webpush:WebPushChannel",
    "sms": "channels.twilio_sms:TwilioSMSChannel",
    "email": "channels.ses_email:SESEmailChannel",
}

#: The delivery channels, in one place: queues, tasks, workers and the API all derive from it.
CHANNELS: tuple[str, ...] = tuple(CHANNEL_CLASSES)

_lock = threading.Lock()
_instances: dict[tuple[int, str], Channel] = {}


def channel_class(name: str) -> type[Channel]:
    """Import and return the adapter class for channel ``name``; KeyError if unknown."""
    module_name, class_name = CHANNEL_CLASSES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def get_channel(name: str, config_for: Callable[[str], Mapping[str, Any]]) -> Channel:
    """Return this process's adapter for ``name``, building it on first use.

    Args:
        name: a key of :data:`CHANNEL_CLASSES`.
        config_for: called once with ``name`` to obtain the adapter's settings mapping.
    """
    key = (os.getpid(), name)
    channel = _instances.get(key)
    if channel is None:
        with _lock:
            channel = _instances.get(key)
            if channel is None:
                channel = channel_class(name)(config_for(name))
                _instances[key] = channel
    return channel


def close_all() -> None:
    """Close every adapter this process built (called on worker shutdown)."""
    pid = os.getpid()
    for (owner, _), channel in list(_instances.items()):
        if owner == pid:
            channel.close()
    _instances.clear()
