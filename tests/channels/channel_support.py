"""Helpers shared by the channel tests (ids, tokens, record lookups)."""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from typing import Any, Callable

from channels.apns import APNsChannel
from channels.base import Message, Outcome
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


def http2_answers(client) -> list[tuple[int, int | None, str]]:
    """``(connection, stream id, HTTP version)`` of each answer an httpx.AsyncClient reads from
    now on (appended as they come)."""
    seen: list[tuple[int, int | None, str]] = []

    async def hook(response):
        seen.append((id(response.extensions["network_stream"]), response.extensions.get("stream_id"),
                     response.http_version))

    client.event_hooks["response"].append(hook)
    return seen


def assert_sends_overlap_on_one_connection(channel, ctl, provider: str, message: Callable[[], Message]) -> None:
    """Ten threads send ``message()`` through ``channel`` while the sandbox holds each request
    300 ms: together they must take about one send's time, not ten (serialised, 3 s), and ride
    one HTTP/2 connection of the channel's ``http`` client. The first send (made here) opens
    the connection and fetches the provider token."""
    assert channel.send_concurrency >= 10
    assert channel.deliver(message()).outcome is Outcome.SENT
    seen = http2_answers(channel.http.client)
    ctl.add_fault(provider=provider, status=None, latency_ms=300, rate=1.0, count=10)
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(channel.deliver(message()).outcome))
               for _ in range(10)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert results == [Outcome.SENT] * 10
    assert elapsed < 1.5, f"10 sends of 300 ms took {elapsed:.2f} s: not concurrent"
    assert len({connection for connection, _, _ in seen}) == 1 and {v for _, _, v in seen} == {"HTTP/2"}
