"""Per-channel content rules applied before anything is written, so that no delivery is queued
that its provider is documented to refuse."""

from __future__ import annotations

import json
from typing import Any, Mapping

from .errors import SendRejected

#: content group → the channels it feeds
GROUP_CHANNELS = {"push": ("apns", "fcm", "webpush"), "sms": ("sms",), "email": ("email",)}
CHANNEL_GROUP = {channel: group for group, channels in GROUP_CHANNELS.items() for channel in channels}

# FCM reserves these data keys (Firebase docs, "Message types": "from", "message_type", and any
# key starting with "google" or "gcm").
_FCM_RESERVED = {"from", "message_type", "notification", "notify_delivery_id"}
PUSH_PAYLOAD_LIMIT = 4096  # bytes: APNs, FCM and Web Push all cap the payload here
SMS_BODY_LIMIT = 1600  # characters: Twilio's Body limit
_PUSH_ENVELOPE = 200  # bytes the adapters add (aps keys, delivery id, URL)


def stringify_data(data: Mapping[str, Any]) -> dict[str, str]:
    """Return push ``data`` with every value a string, as FCM requires.

    Documented rule: strings stay as they are; every other JSON value (number, boolean, null,
    object, array) is replaced by its compact JSON text, e.g. ``3`` → ``"3"``, ``true`` →
    ``"true"``, ``{"a": 1}`` → ``'{"a":1}'``.

    Raises:
        SendRejected: a key is reserved by FCM.
    """
    out: dict[str, str] = {}
    for key, value in data.items():
        if key in _FCM_RESERVED or key.startswith(("google", "gcm")):
            raise SendRejected("reserved_data_key", f"push data key {key!r} is reserved",
                               fields={"content.push.data": [f"{key!r} is reserved by FCM"]})
        out[key] = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return out


def check_content(content: Mapping[str, Any]) -> dict:
    """Validate rendered content per group and return it normalised.

    Raises:
        SendRejected: empty push/SMS/email content, push payload over 4096 bytes, SMS body over
            1600 characters (code ``empty_content``, ``payload_too_large``, ``body_too_long``).
    """
    out: dict[str, dict] = {}
    if "push" in content:
        push = dict(content["push"])
        push["data"] = stringify_data(push.get("data") or {})
        if not (push.get("title") or push.get("body") or push["data"]):
            raise SendRejected("empty_content", "push content needs a title, a body or data",
                               fields={"content.push": ["empty"]})
        size = len(json.dumps(push, ensure_ascii=False).encode()) + _PUSH_ENVELOPE
        if size > PUSH_PAYLOAD_LIMIT:
            raise SendRejected("payload_too_large", f"push payload would be about {size} bytes, over {PUSH_PAYLOAD_LIMIT}",
                               status=422, fields={"content.push": ["too large"]})
        out["push"] = push
    if "sms" in content:
        body = (content["sms"].get("body") or "").strip()
        if not body:
            raise SendRejected("empty_content", "SMS content needs a body", fields={"content.sms.body": ["empty"]})
        if len(body) > SMS_BODY_LIMIT:
            raise SendRejected("body_too_long", f"SMS body is {len(body)} characters, over {SMS_BODY_LIMIT}",
                               status=422, fields={"content.sms.body": ["too long"]})
        out["sms"] = {"body": body}
    if "email" in content:
        email = dict(content["email"])
        if not (email.get("subject") or "").strip() or not ((email.get("text") or "").strip() or (email.get("html") or "").strip()):
            raise SendRejected("empty_content", "email content needs a subject and a text or HTML body",
                               fields={"content.email": ["empty"]})
        out["email"] = email
    return out
