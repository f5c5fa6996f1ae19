"""Helpers shared by the channel tests (ids, tokens, record lookups)."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

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
