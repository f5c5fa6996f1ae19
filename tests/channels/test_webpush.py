"""WebPushChannel against the sandbox's push service (RFC 8030/8291/8292)."""

from __future__ import annotations

import base64
import json

import pytest

from channels.base import Message, Outcome
from channels.webpush import ENCRYPTION_OVERHEAD, MAX_ENCRYPTED_BYTES, WebPushChannel

from .channel_support import KOREAN_BODY, KOREAN_TITLE, connections_opened, new_id, only_record


def push(subscription: dict, delivery_id: str | None = None, **kw) -> Message:
    content = kw.pop("content", {"title": KOREAN_TITLE, "body": KOREAN_BODY,
                                 "url": "https://example.com/orders/42",
                                 "data": {"order_id": "A-42", "count": 3}})
    return Message(delivery_id or new_id(), subscription, content, **kw)


@pytest.fixture
def subscription(ctl):
    return ctl.create_subscription()


def test_sent_and_decrypted_by_the_push_service(webpush, ctl, subscription, configs):
    did = new_id()
    result = webpush.deliver(push(subscription, did, priority="high", ttl=900))

    assert result.outcome is Outcome.SENT and result.status == 201
    assert result.provider_message_id.startswith(subscription["endpoint"].split("/wp/")[0] + "/m/")
    rec = only_record(ctl, "webpush", did)
    assert rec["accepted"]
    assert json.loads(rec["extra"]["plaintext"]) == {
        "title": KOREAN_TITLE, "body": KOREAN_BODY, "url": "https://example.com/orders/42",
        "data": {"order_id": "A-42", "count": 3}, "notify_delivery_id": did}
    h = rec["headers"]
    assert h["content-encoding"] == "aes128gcm"
    assert h["ttl"] == "900" and h["urgency"] == "high"
    assert h["topic"] == did.replace("-", "")  # UUID → 32 URL-safe characters
    assert h["authorization"].startswith("vapid t=")
    claims = rec["extra"]["vapid_claims"]
    assert claims["aud"] == subscription["endpoint"].split("/wp/")[0]
    assert claims["sub"] == configs["webpush"]["vapid_subject"]
    assert len(ctl.inbox("webpush", to=subscription["endpoint"])) == 1


def test_default_ttl_and_normal_urgency(webpush, ctl, subscription):
    did = new_id()
    assert webpush.deliver(push(subscription, did)).outcome is Outcome.SENT
    h = only_record(ctl, "webpush", did)["headers"]
    assert h["ttl"] == str(28 * 24 * 3600) and h["urgency"] == "normal"


def test_topic_from_a_free_form_collapse_key(webpush, ctl, subscription):
    did = new_id()
    result = webpush.deliver(push(subscription, did, collapse_key="주문 A-42 상태"))
    assert result.outcome is Outcome.SENT
    topic = only_record(ctl, "webpush", did)["headers"]["topic"]
    assert len(topic) == 32


def test_vapid_signed_once_per_origin_and_connection_reused(make_channel, ctl):
    channel = make_channel("webpush")
    subs = [ctl.create_subscription() for _ in range(3)]
    for i in range(12):
        assert channel.deliver(push(subs[i % 3])).outcome is Outcome.SENT
    assert channel.signer.signed == 1
    records = ctl.records("webpush")
    assert len({r["headers"]["authorization"] for r in records}) == 1
    assert connections_opened(channel.session, subs[0]["endpoint"]) == 1


def test_vapid_resigned_before_expiry(make_channel, ctl, subscription):
    channel = make_channel("webpush")
    channel.signer.margin = channel.signer.ttl + 1  # every cached header is "about to expire"
    assert channel.deliver(push(subscription)).outcome is Outcome.SENT
    assert channel.deliver(push(subscription)).outcome is Outcome.SENT
    assert channel.signer.signed == 2


def test_resend_after_lost_answer_collapses_by_topic(webpush, ctl, subscription):
    did = new_id()
    ctl.add_fault(provider="webpush", status=503, after_accept=True, count=1)
    assert webpush.deliver(push(subscription, did)).outcome is Outcome.RETRY
    assert webpush.deliver(push(subscription, did)).outcome is Outcome.SENT
    assert WebPushChannel.collapses_resends
    assert len(ctl.inbox("webpush", to=subscription["endpoint"])) == 1


def test_gone_subscription_is_dead(webpush, ctl, subscription):
    ctl.kill_token("webpush", subscription["endpoint"])
    result = webpush.deliver(push(subscription))
    assert (result.outcome, result.status) == (Outcome.DEAD_TOKEN, 410)


def test_unknown_subscription_is_dead(webpush, ctl, subscription):
    unknown = {**subscription, "endpoint": subscription["endpoint"][:-4] + "zzzz"}
    result = webpush.deliver(push(unknown))
    assert (result.outcome, result.status) == (Outcome.DEAD_TOKEN, 404)


def test_payload_too_large_answer_fails(webpush, ctl, subscription):
    ctl.add_fault(provider="webpush", status=413, count=1)
    result = webpush.deliver(push(subscription))
    assert (result.outcome, result.status) == (Outcome.FAILED, 413)


@pytest.mark.parametrize("status, retry_after", [(429, 12), (503, None), (500, None)])
def test_throttled_and_server_errors_retry(webpush, ctl, subscription, status, retry_after):
    ctl.add_fault(provider="webpush", status=status, retry_after=retry_after, count=1)
    result = webpush.deliver(push(subscription))
    assert (result.outcome, result.status) == (Outcome.RETRY, status)
    assert result.retry_after == (None if retry_after is None else float(retry_after))


def test_other_client_errors_fail(webpush, ctl, subscription):
    ctl.add_fault(provider="webpush", status=400, count=1)
    result = webpush.deliver(push(subscription))
    assert (result.outcome, result.status) == (Outcome.FAILED, 400)


def test_subscription_bound_to_another_vapid_key_is_refused(webpush, ctl):
    from .channel_support import other_vapid_public_key

    sub = ctl.create_subscription(other_vapid_public_key())
    result = webpush.deliver(push(sub))
    assert (result.outcome, result.status) == (Outcome.FAILED, 403)


def test_encrypted_size_limit_is_exact(webpush, ctl, subscription):
    """aes128gcm adds 103 bytes; 4096 encrypted bytes are accepted, 4097 are not sent."""
    did = new_id()
    overhead = len(_plaintext(webpush, subscription, did, "x")) - 1
    room = MAX_ENCRYPTED_BYTES - ENCRYPTION_OVERHEAD - overhead
    body = "가" * (room // 3) + "a" * (room % 3)
    fits = Message(did, subscription, {"body": body})
    assert len(_plaintext(webpush, subscription, did, body)) + ENCRYPTION_OVERHEAD == 4096
    assert webpush.deliver(fits).outcome is Outcome.SENT
    assert only_record(ctl, "webpush", did)["body"]["length"] == 4096
    result = webpush.deliver(Message(did, subscription, {"body": body + "a"}))
    assert (result.outcome, result.reason) == (Outcome.FAILED, "payload_too_large")
    assert len(ctl.records("webpush")) == 1


def _plaintext(channel, subscription, did, body):
    return channel.build_payload(Message(did, subscription, {"body": body})).data


@pytest.mark.parametrize("bad,reason", [
    ({"endpoint": "http://127.0.0.1/wp/x", "keys": {"p256dh": "AAAA", "auth": "AAAA"}},
     "invalid_address:endpoint:not_https_url"),
    ({"keys": {"p256dh": "AAAA", "auth": "AAAA"}}, "invalid_address:endpoint:required"),
    ("https://push.example.com/wp/x", "invalid_address:not_a_subscription"),
    ({"endpoint": "https://push.example.com/wp/x", "keys": {"p256dh": "AAAA", "auth": "AAAA"}},
     "invalid_address:keys.p256dh:wrong_length"),
    ({"endpoint": "https://push.example.com/wp/x", "keys": {"auth": "AAAA"}}, "invalid_address:keys.p256dh:required"),
])
def test_malformed_subscription_is_a_dead_address_before_any_call(webpush, ctl, bad, reason):
    """Stored before the registration rules (channels.webpush.parse_subscription): no attempt
    can succeed, so it is DEAD_TOKEN (the device is deactivated), not a failure per message."""
    result = webpush.deliver(push(bad))
    assert (result.outcome, result.reason) == (Outcome.DEAD_TOKEN, reason)
    assert ctl.records("webpush") == []


def test_a_p256dh_key_off_the_curve_is_a_dead_address_not_an_exception(webpush, ctl, subscription):
    """pywebpush only notices while encrypting ("Invalid EC key", a ValueError the adapter
    cannot classify): the adapter checks the point first."""
    text = subscription["keys"]["p256dh"]
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    bad = {**subscription, "keys": {**subscription["keys"], "p256dh": base64.urlsafe_b64encode(
        raw[:-1] + bytes([raw[-1] ^ 1])).decode().rstrip("=")}}
    result = webpush.deliver(push(bad))
    assert (result.outcome, result.reason) == (Outcome.DEAD_TOKEN, "invalid_address:keys.p256dh:not_on_curve")
    assert ctl.records("webpush") == []
    assert webpush.deliver(push(subscription)).outcome is Outcome.SENT  # the same key, on the curve


def test_latency_beyond_timeout_is_transport_retry(make_channel, ctl, subscription):
    channel = make_channel("webpush", timeout=0.5)
    ctl.add_fault(provider="webpush", latency_ms=1500, count=1)
    result = channel.deliver(push(subscription))
    assert (result.outcome, result.reason, result.status) == (Outcome.RETRY, "timeout", 0)
    assert result.maybe_delivered is True
    assert channel.deliver(push(subscription)).outcome is Outcome.SENT


def test_unreachable_push_service_is_transport_retry_not_sent(webpush, subscription):
    gone = {**subscription, "endpoint": "https://127.0.0.1:9/wp/x"}
    result = webpush.deliver(push(gone))
    assert (result.outcome, result.reason) == (Outcome.RETRY, "transport_error")
    assert result.maybe_delivered is False
