"""WebPushChannel's ``open_url``: the service worker finds it in the decrypted payload, and a
payload that would outgrow the push service's 4096 bytes with it is sent without it, never
refused (the API checked the content without it)."""

from __future__ import annotations

import json

from channels.base import Message, Outcome
from channels.webpush import ENCRYPTION_OVERHEAD, MAX_ENCRYPTED_BYTES, WebPushChannel

from .channel_support import new_id, only_record

OPEN_URL = "https://notify.example.com/t/p/0d6c5c5e4f0e4d3b9a512f3c9f1b7a10:signature"


def test_the_open_url_reaches_the_service_worker(webpush, ctl):
    assert WebPushChannel.open_reports
    subscription, did = ctl.create_subscription(), new_id()
    result = webpush.deliver(Message(did, subscription, {"title": "Shipped"}, open_url=OPEN_URL))
    assert result.outcome is Outcome.SENT
    payload = json.loads(only_record(ctl, "webpush", did)["extra"]["plaintext"])
    assert payload["open_url"] == OPEN_URL and payload["notify_delivery_id"] == did


def test_content_that_fits_only_without_the_open_url_is_sent_without_it(webpush, ctl):
    subscription, did = ctl.create_subscription(), new_id()
    content = {"title": "Shipped", "body": ""}
    room = MAX_ENCRYPTED_BYTES - WebPushChannel.check_content(content)["payload_bytes"]
    content["body"] = "x" * (room - 10)  # fits, but not with the open URL
    assert WebPushChannel.check_content(content)["payload_bytes"] <= MAX_ENCRYPTED_BYTES
    result = webpush.deliver(Message(did, subscription, content, open_url=OPEN_URL))
    assert result.outcome is Outcome.SENT
    record = only_record(ctl, "webpush", did)
    payload = json.loads(record["extra"]["plaintext"])
    assert "open_url" not in payload and payload["notify_delivery_id"] == did
    assert len(record["extra"]["plaintext"].encode()) + ENCRYPTION_OVERHEAD <= MAX_ENCRYPTED_BYTES
