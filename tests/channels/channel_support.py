"""Helpers shared by the channel tests (ids, tokens, record lookups)."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from channels.apns import APNsChannel
from channels.fcm import FCMChannel
from channels.ses_email import SESEmailChannel
from channels.smtp_email import SMTPEmailChannel
from channels.twilio_sms import TwilioSMSChannel
from channels.webpush import WebPushChannel

#: config name (the channel, as in channels.registry; ``smtp`` for the email channel's second
#: provider) → adapter class
CHANNEL_CLASSES = {"apns": APNsChannel, "fcm": FCMChannel, "webpush": WebPushChannel,
                   "sms": TwilioSMSChannel, "email": SESEmailChannel, "smtp": SMTPEmailChannel}

#: Korean + emoji: multi-byte UTF-8, UCS-2 SMS, surrogate pairs in UTF-16.
KOREAN_TITLE = "주문하신 상품이 출발했어요 🚚"
KOREAN_BODY = "안녕하세요 😀 내일 도착 예정입니다. 감사합니다 🙏"


def new_id() -> str:
    """A delivery id (UUID string), as notify creates them."""
    return str(uuid.uuid4())


def apns_token() -> str:
    """A well-formed APNs device token (64 hex)."""
    return secrets.token_hex(32)


def fcm_token() -> str:
    """A plausible FCM registration token."""
    return "fcm:" + secrets.token_urlsafe(60)


def only_record(ctl, provider: str, delivery_id: str) -> dict[str, Any]:
    """The single record of ``provider`` carrying ``delivery_id``."""
    records = ctl.records(provider, delivery_id=delivery_id)
    assert len(records) == 1, records
    return records[0]


def connections_opened(session, url: str) -> int:
    """How many TCP connections a requests session's pools have opened (all hosts of the
    adapter serving ``url``)."""
    pools = session.get_adapter(url).poolmanager.pools
    return sum(pools[key].num_connections for key in pools.keys())


def other_vapid_public_key() -> str:
    """A VAPID public key (URL-safe base64, uncompressed point) of some other server."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    point = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return base64.urlsafe_b64encode(point).rstrip(b"=").decode("ascii")
