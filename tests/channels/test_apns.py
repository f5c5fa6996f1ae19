"""APNsChannel against the sandbox's APNs (HTTP/2 over TLS, ES256 provider tokens)."""

from __future__ import annotations

import threading
import time

import jwt
import pytest

from channels.apns import APNsChannel
from channels.base import Message, Outcome
from channels.tokens import TokenEntry

from tests.conftest import wait_until

from .channel_support import KOREAN_BODY, KOREAN_TITLE, apns_token, assert_sends_overlap_on_one_connection, new_id, \
    only_record


def alert(token: str, delivery_id: str | None = None, **kw) -> Message:
    content = kw.pop("content", {"title": KOREAN_TITLE, "body": KOREAN_BODY, "badge": 3,
                                 "sound": "default", "data": {"order_id": "A-42"}})
    return Message(delivery_id or new_id(), token, content, **kw)


def test_sent_over_http2_with_jwt_topic_and_ids(apns, ctl, configs):
    did, token = new_id(), apns_token()
    result = apns.deliver(alert(token, did, priority="high", ttl=600, collapse_key="order-A-42"))

    assert result.outcome is Outcome.SENT
    assert result.provider_message_id == did  # apns-id echoed
    assert result.status == 200
    rec = only_record(ctl, "apns", did)
    assert rec["accepted"] and rec["http_version"] == "2"
    assert rec["path"] == f"/3/device/{token}"
    h = rec["headers"]
    assert h["apns-topic"] == configs["apns"]["topic"]
    assert h["apns-push-type"] == "alert" and h["apns-priority"] == "10"
    assert h["apns-id"] == did and h["apns-collapse-id"] == "order-A-42"
    assert abs(int(h["apns-expiration"]) - (time.time() + 600)) < 5
    assert rec["extra"]["jwt_header"]["kid"] == configs["apns"]["key_id"]
    assert rec["extra"]["jwt_claims"]["iss"] == configs["apns"]["team_id"]
    # the JWT really is ES256-signed by the team key
    bearer = h["authorization"].split(" ", 1)[1]
    assert jwt.get_unverified_header(bearer)["alg"] == "ES256"
    body = rec["body"]
    assert body["aps"]["alert"] == {"title": KOREAN_TITLE, "body": KOREAN_BODY}
    assert body["aps"]["badge"] == 3 and body["aps"]["sound"] == "default"
    assert body["order_id"] == "A-42" and body["notify_delivery_id"] == did
    inbox = ctl.inbox("apns", to=token)
    assert len(inbox) == 1


def test_collapse_id_defaults_to_delivery_id_and_resend_shows_once(apns, ctl):
    did, token = new_id(), apns_token()
    # the provider delivers, then the answer is lost: the worker retries the same delivery
    ctl.add_fault(provider="apns", status=500, after_accept=True, count=1, to=token)
    first = apns.deliver(alert(token, did))
    assert first.outcome is Outcome.RETRY
    second = apns.deliver(alert(token, did))
    assert second.outcome is Outcome.SENT
    records = ctl.records("apns", delivery_id=did)
    assert [r["headers"]["apns-collapse-id"] for r in records] == [did, did]
    assert APNsChannel.collapses_resends
    assert len(ctl.inbox("apns", to=token)) == 1


def test_background_push_without_title_or_body(apns, ctl):
    did = new_id()
    result = apns.deliver(Message(did, apns_token(), {"data": {"sync": "1"}}, priority="high"))
    assert result.outcome is Outcome.SENT
    rec = only_record(ctl, "apns", did)
    assert rec["headers"]["apns-push-type"] == "background"
    assert rec["headers"]["apns-priority"] == "5"  # Apple requires 5 for background
    assert rec["body"]["aps"] == {"content-available": 1}
    assert "apns-expiration" not in rec["headers"]  # ttl None: Apple's default storage


def test_ttl_zero_means_now_or_never(apns, ctl):
    did = new_id()
    assert apns.deliver(alert(apns_token(), did, ttl=0)).outcome is Outcome.SENT
    assert only_record(ctl, "apns", did)["headers"]["apns-expiration"] == "0"


def test_jwt_signed_once_and_one_connection_reused(make_channel, ctl):
    channel = make_channel("apns")
    streams = []

    async def on_response(response):
        streams.append((id(response.extensions["network_stream"]), response.extensions.get("stream_id")))

    channel.client.event_hooks["response"].append(on_response)
    client = channel.client
    ids = [new_id() for _ in range(15)]
    for did in ids:
        assert channel.deliver(alert(apns_token(), did)).outcome is Outcome.SENT

    assert channel.client is client
    assert channel.token.signed == 1
    assert len({s for s, _ in streams}) == 1, "every send rode the same HTTP/2 connection"
    assert [sid for _, sid in streams] == sorted({sid for _, sid in streams})  # new stream each
    tokens = {r["headers"]["authorization"] for r in ctl.records("apns")}
    assert len(tokens) == 1
    iats = {r["extra"]["jwt_claims"]["iat"] for r in ctl.records("apns")}
    assert len(iats) == 1


def test_concurrent_sends_share_the_client(apns, ctl):
    results, errors = [], []

    def worker():
        try:
            for _ in range(5):
                results.append(apns.deliver(alert(apns_token())).outcome)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == [Outcome.SENT] * 30
    assert len(ctl.records("apns", accepted=True)) == 30


def test_concurrent_sends_are_streams_in_flight_together_on_one_connection(make_channel, ctl):
    channel = make_channel("apns")
    assert_sends_overlap_on_one_connection(channel, ctl, "apns", lambda: alert(apns_token()))
    channel.close()


def test_jwt_refreshed_after_max_age(make_channel, ctl):
    channel = make_channel("apns")
    channel.token.max_age = 0.0  # simulate 30 minutes passing
    assert channel.deliver(alert(apns_token())).outcome is Outcome.SENT
    assert channel.deliver(alert(apns_token())).outcome is Outcome.SENT
    assert channel.token.signed == 2


def test_expired_provider_token_resigns_and_retries(make_channel, ctl):
    channel = make_channel("apns")
    token = apns_token()
    assert channel.deliver(alert(token)).outcome is Outcome.SENT
    ctl.add_fault(provider="apns", status=403, reason="ExpiredProviderToken", count=1)
    result = channel.deliver(alert(token))
    assert (result.outcome, result.reason, result.status) == \
        (Outcome.RETRY, "ExpiredProviderToken", 403)
    assert channel.deliver(alert(token)).outcome is Outcome.SENT
    assert channel.token.signed == 2
    auths = [r["headers"]["authorization"] for r in ctl.records("apns")]
    assert auths[0] == auths[1] != auths[2]


def test_real_expired_token_from_sandbox(make_channel, ctl):
    """A JWT older than one hour is refused by the sandbox itself; the adapter re-signs."""
    channel = make_channel("apns")
    now = time.time()
    old = jwt.encode({"iss": channel.config["team_id"], "iat": int(now) - 4000},
                     channel.token._key, algorithm="ES256", headers={"kid": channel.config["key_id"]})
    # as if another process had stored it (and the sandbox had restarted meanwhile)
    channel.token.store.save(channel.token.store_key, TokenEntry(old, now, now + 600, now + 600))
    result = channel.deliver(alert(apns_token()))
    assert (result.outcome, result.reason) == (Outcome.RETRY, "ExpiredProviderToken")
    assert channel.deliver(alert(apns_token())).outcome is Outcome.SENT


def test_service_unavailable_is_retry_with_retry_after(apns, ctl):
    ctl.add_fault(provider="apns", status=503, retry_after=7, count=1)
    result = apns.deliver(alert(apns_token()))
    assert (result.outcome, result.reason, result.retry_after, result.status) == \
        (Outcome.RETRY, "ServiceUnavailable", 7.0, 503)


@pytest.mark.parametrize("status, reason", [(429, "TooManyRequests"),
                                            (500, "InternalServerError")])
def test_throttling_and_server_errors_retry(apns, ctl, status, reason):
    ctl.add_fault(provider="apns", status=status, count=1)
    result = apns.deliver(alert(apns_token()))
    assert (result.outcome, result.reason) == (Outcome.RETRY, reason)


def test_unregistered_token_is_dead(apns, ctl):
    token = apns_token()
    ctl.kill_token("apns", token)
    result = apns.deliver(alert(token))
    assert (result.outcome, result.reason, result.status) == \
        (Outcome.DEAD_TOKEN, "Unregistered", 410)
    assert "timestamp" in result.raw["body"]


@pytest.mark.parametrize("reason", ["BadDeviceToken", "DeviceTokenNotForTopic"])
def test_bad_device_token_is_dead(apns, ctl, reason):
    ctl.add_fault(provider="apns", status=400, reason=reason, count=1)
    result = apns.deliver(alert(apns_token()))
    assert (result.outcome, result.reason) == (Outcome.DEAD_TOKEN, reason)


@pytest.mark.parametrize("status, reason", [(400, "BadCollapseId"), (413, "PayloadTooLarge"),
                                            (403, "InvalidProviderToken"),
                                            (400, "TopicDisallowed")])
def test_other_client_errors_fail(apns, ctl, status, reason):
    ctl.add_fault(provider="apns", status=status, reason=reason, count=1)
    result = apns.deliver(alert(apns_token()))
    assert (result.outcome, result.reason, result.status) == (Outcome.FAILED, reason, status)


def test_wrong_topic_is_refused_by_sandbox(make_channel, ctl):
    channel = make_channel("apns", topic="com.example.other")
    result = channel.deliver(alert(apns_token()))
    assert (result.outcome, result.reason) == (Outcome.FAILED, "TopicDisallowed")


def test_latency_beyond_timeout_is_transport_retry_and_client_recovers(make_channel, ctl):
    channel = make_channel("apns", timeout=0.5)
    token = apns_token()
    assert channel.deliver(alert(token)).outcome is Outcome.SENT
    ctl.add_fault(provider="apns", latency_ms=1500, count=1)
    started = time.monotonic()
    slow = alert(token)
    result = channel.deliver(slow)
    assert time.monotonic() - started < 1.4
    assert (result.outcome, result.reason, result.status) == (Outcome.RETRY, "timeout", 0)
    assert "Timeout" in result.raw["error"] and result.maybe_delivered is True
    assert channel.deliver(alert(token)).outcome is Outcome.SENT
    # The sandbox records the timed-out request when its latency is over: wait for it here, so
    # that it does not land among a later test's records.
    wait_until(lambda: ctl.records("apns", delivery_id=slow.delivery_id), timeout=5, message="the late request")


def test_connection_refused_is_transport_retry(make_channel):
    channel = make_channel("apns", url="https://127.0.0.1:9", timeout=1)
    result = channel.deliver(alert(apns_token()))
    assert (result.outcome, result.reason) == (Outcome.RETRY, "transport_error")
    assert result.maybe_delivered is False


def test_invalid_token_fails_before_any_request(apns, ctl):
    for token in ("abc", "z" * 64, apns_token() + "00", None):
        result = apns.deliver(alert(token))
        assert (result.outcome, result.reason) == (Outcome.FAILED, "invalid_token")
    assert ctl.records("apns") == []


def test_payload_limit_is_4096_utf8_bytes(apns, ctl):
    did, token = new_id(), apns_token()
    overhead = len(apns.build_payload(Message(did, token, {"body": "x"}))[0]) - 1
    room = 4096 - overhead  # UTF-8 bytes left for the body text
    body = "가" * (room // 3) + "a" * (room % 3)  # Korean: 3 bytes per character
    fits = Message(did, token, {"body": body})
    assert len(apns.build_payload(fits)[0]) == 4096
    assert apns.deliver(fits).outcome is Outcome.SENT  # the sandbox accepts exactly 4096
    result = apns.deliver(Message(did, token, {"body": body + "a"}))
    assert (result.outcome, result.reason) == (Outcome.FAILED, "payload_too_large")
    assert len(ctl.records("apns")) == 1


def test_collapse_id_over_64_bytes_is_invalid(apns, ctl):
    result = apns.deliver(alert(apns_token(), collapse_key="한" * 22))  # 66 bytes
    assert (result.outcome, result.reason) == (Outcome.FAILED, "collapse_id_too_long")
    assert ctl.records("apns") == []
