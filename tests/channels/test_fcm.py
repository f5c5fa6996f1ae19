"""FCMChannel against the sandbox's FCM HTTP v1 API and OAuth2 token endpoint."""

from __future__ import annotations

import time

import pytest

from channels.errors import InvalidMessage
from channels.base import Message, Outcome
from channels.fcm import FCMChannel

from tests.conftest import wait_until

from .channel_support import KOREAN_BODY, KOREAN_TITLE, assert_sends_overlap_on_one_connection, fcm_token, \
    http2_answers, new_id, only_record


def push(token: str, delivery_id: str | None = None, **kw) -> Message:
    content = kw.pop("content", {"title": KOREAN_TITLE, "body": KOREAN_BODY,
                                 "image": "https://cdn.example.com/p.png",
                                 "url": "https://example.com/orders/42",
                                 "data": {"order_id": "A-42", "note": "배송 중 🚚"}})
    return Message(delivery_id or new_id(), token, content, **kw)


def token_requests(ctl) -> list[dict]:
    return [r for r in ctl.records("fcm") if r["path"] == "/token"]


def send_requests(ctl) -> list[dict]:
    return [r for r in ctl.records("fcm") if r["path"] != "/token"]


def test_sent_with_oauth_token_and_string_data(fcm, ctl, configs):
    did, token = new_id(), fcm_token()
    result = fcm.deliver(push(token, did, priority="high", ttl=3600))

    assert result.outcome is Outcome.SENT
    assert result.provider_message_id.startswith(
        f"projects/{configs['fcm']['project_id']}/messages/")
    rec = only_record(ctl, "fcm", did)
    assert rec["accepted"]
    assert rec["path"] == f"/v1/projects/{configs['fcm']['project_id']}/messages:send"
    assert rec["headers"]["authorization"].startswith("Bearer ya29.")
    msg = rec["body"]["message"]
    assert msg["token"] == token
    assert msg["notification"] == {"title": KOREAN_TITLE, "body": KOREAN_BODY,
                                   "image": "https://cdn.example.com/p.png"}
    assert msg["data"] == {"order_id": "A-42", "note": "배송 중 🚚",
                           "url": "https://example.com/orders/42", "notify_delivery_id": did}
    assert all(isinstance(v, str) for v in msg["data"].values())
    assert msg["android"]["priority"] == "HIGH" and msg["android"]["ttl"] == "3600s"
    assert msg["android"]["notification"] == {"tag": did}
    assert "collapse_key" not in msg["android"]  # FCM keeps only 4 collapse keys per device
    assert msg["apns"]["headers"]["apns-collapse-id"] == did
    assert msg["apns"]["headers"]["apns-priority"] == "10"
    assert abs(int(msg["apns"]["headers"]["apns-expiration"]) - (time.time() + 3600)) < 5


def test_explicit_collapse_key_and_normal_priority(fcm, ctl):
    did = new_id()
    assert fcm.deliver(push(fcm_token(), did, collapse_key="score")).outcome is Outcome.SENT
    msg = only_record(ctl, "fcm", did)["body"]["message"]
    assert msg["android"]["collapse_key"] == "score"
    assert msg["android"]["priority"] == "NORMAL"
    assert msg["apns"]["headers"] == {"apns-priority": "5", "apns-collapse-id": "score"}


def test_data_only_message(fcm, ctl):
    did = new_id()
    assert fcm.deliver(push(fcm_token(), did, content={"data": {"sync": "1"}})).outcome \
        is Outcome.SENT
    msg = only_record(ctl, "fcm", did)["body"]["message"]
    assert "notification" not in msg and "notification" not in msg["android"]


def test_access_token_fetched_once_and_one_http2_connection_reused(make_channel, ctl):
    channel = make_channel("fcm")
    seen = http2_answers(channel.http.client)
    for _ in range(10):
        assert channel.deliver(push(fcm_token())).outcome is Outcome.SENT
    assert len(token_requests(ctl)) == 1
    assert len({r["headers"]["authorization"] for r in send_requests(ctl)}) == 1
    assert {r["http_version"] for r in send_requests(ctl)} == {"2"}
    assert len({connection for connection, _, _ in seen}) == 1, "every send rode the same connection"
    streams = [stream for _, stream, _ in seen]
    assert streams == sorted(set(streams))  # a new stream each


def test_concurrent_sends_are_streams_in_flight_together_on_one_connection(make_channel, ctl):
    channel = make_channel("fcm")
    assert_sends_overlap_on_one_connection(channel, ctl, "fcm", lambda: push(fcm_token()))


def test_resend_after_lost_answer_collapses(fcm, ctl):
    did, token = new_id(), fcm_token()
    ctl.add_fault(provider="fcm", status=500, after_accept=True, count=1, to=token)
    assert fcm.deliver(push(token, did)).outcome is Outcome.RETRY
    assert fcm.deliver(push(token, did)).outcome is Outcome.SENT
    assert FCMChannel.collapses_resends
    assert len(ctl.inbox("fcm", to=token)) == 1


@pytest.mark.parametrize("data", [{"from": "x"}, {"google.x": "y"}, {"gcm.n": "y"}, {"message_type": "y"},
                                  {"notification": "y"}, {"notify_delivery_id": "mine"}])
def test_reserved_data_keys_are_refused_before_any_request(fcm, ctl, data):
    result = fcm.deliver(push(fcm_token(), content={"title": "t", "data": data}))
    assert (result.outcome, result.reason) == (Outcome.FAILED, "reserved_data_key")
    assert send_requests(ctl) == []
    with pytest.raises(InvalidMessage, match="reserved"):
        FCMChannel.check_content({"title": "t", "data": data})  # what the API asks


def test_data_values_that_are_not_strings_go_as_compact_json_text(fcm, ctl):
    did = new_id()
    data = {"count": 3, "flag": True, "nested": {"a": [1, "b"]}, "none": None}
    assert fcm.deliver(push(fcm_token(), did, content={"title": "t", "data": data})).outcome is Outcome.SENT
    (record,) = send_requests(ctl)
    sent = record["body"]["message"]["data"]
    assert {k: sent[k] for k in data} == {"count": "3", "flag": "true", "nested": '{"a":[1,"b"]}', "none": "null"}


def test_oversize_payload_is_invalid_and_limit_matches_the_service(fcm, ctl):
    token = fcm_token()
    ok = push(token, content={"data": {"blob": "가" * 1300}})  # ~3.9 KB in UTF-8
    assert fcm.deliver(ok).outcome is Outcome.SENT
    result = fcm.deliver(push(token, content={"title": "t", "data": {"blob": "가" * 1400}}))
    assert (result.outcome, result.reason) == (Outcome.FAILED, "payload_too_large")
    assert len(send_requests(ctl)) == 1


def test_unregistered_token_is_dead(fcm, ctl):
    token = fcm_token()
    ctl.kill_token("fcm", token)
    result = fcm.deliver(push(token))
    assert (result.outcome, result.reason, result.status) == \
        (Outcome.DEAD_TOKEN, "UNREGISTERED", 404)


def test_sender_id_mismatch_is_dead(fcm, ctl):
    ctl.add_fault(provider="fcm", status=403, reason="SENDER_ID_MISMATCH", count=1)
    result = fcm.deliver(push(fcm_token()))
    assert (result.outcome, result.reason, result.status) == \
        (Outcome.DEAD_TOKEN, "SENDER_ID_MISMATCH", 403)


def test_invalid_registration_token_is_dead(fcm, ctl):
    """The sandbox itself refuses a malformed token with Google's documented message."""
    result = fcm.deliver(push("bad tok"))
    assert (result.outcome, result.reason, result.status) == \
        (Outcome.DEAD_TOKEN, "INVALID_ARGUMENT", 400)
    assert "registration token" in result.raw["body"]["error"]["message"]


def test_other_invalid_argument_fails(fcm, ctl):
    ctl.add_fault(provider="fcm", status=400, reason="INVALID_ARGUMENT", count=1)
    result = fcm.deliver(push(fcm_token()))
    assert (result.outcome, result.reason, result.status) == \
        (Outcome.FAILED, "INVALID_ARGUMENT", 400)


def test_ttl_beyond_four_weeks_is_refused_by_the_service(fcm, ctl):
    result = fcm.deliver(push(fcm_token(), ttl=29 * 24 * 3600))
    assert (result.outcome, result.reason) == (Outcome.FAILED, "INVALID_ARGUMENT")


@pytest.mark.parametrize("status, reason, retry_after", [
    (429, "QUOTA_EXCEEDED", 30), (503, "UNAVAILABLE", 4), (500, "INTERNAL", None)])
def test_quota_unavailable_internal_retry(fcm, ctl, status, reason, retry_after):
    ctl.add_fault(provider="fcm", status=status, retry_after=retry_after, count=1)
    result = fcm.deliver(push(fcm_token()))
    assert (result.outcome, result.reason, result.status) == (Outcome.RETRY, reason, status)
    assert result.retry_after == (None if retry_after is None else float(retry_after))


def test_unauthenticated_drops_the_access_token_and_retries(make_channel, ctl):
    channel = make_channel("fcm")
    assert channel.deliver(push(fcm_token())).outcome is Outcome.SENT
    ctl.add_fault(provider="fcm", status=401, reason="UNAUTHENTICATED", count=1)
    result = channel.deliver(push(fcm_token()))
    assert (result.outcome, result.reason, result.status) == \
        (Outcome.RETRY, "UNAUTHENTICATED", 401)
    assert channel.deliver(push(fcm_token())).outcome is Outcome.SENT
    assert len(token_requests(ctl)) == 2  # a fresh access token after the 401
    sends = send_requests(ctl)
    assert len(sends) == 3  # no hidden resend inside google-auth on the 401
    assert sends[0]["headers"]["authorization"] != sends[2]["headers"]["authorization"]


def test_real_expired_access_token(make_channel, ctl):
    """An access token the service no longer knows: a real 401 from the sandbox."""
    channel = make_channel("fcm")
    assert channel.deliver(push(fcm_token())).outcome is Outcome.SENT
    channel.credentials.token = "ya29.sbx-not-issued-by-the-sandbox"  # still "valid" locally
    result = channel.deliver(push(fcm_token()))
    assert (result.outcome, result.status) == (Outcome.RETRY, 401)
    assert channel.deliver(push(fcm_token())).outcome is Outcome.SENT


def test_third_party_auth_error_fails(fcm, ctl):
    ctl.add_fault(provider="fcm", status=401, reason="THIRD_PARTY_AUTH_ERROR", count=1)
    result = fcm.deliver(push(fcm_token()))
    assert (result.outcome, result.reason) == (Outcome.FAILED, "THIRD_PARTY_AUTH_ERROR")


def test_wrong_project_fails(make_channel, ctl):
    result = make_channel("fcm", project_id="someone-else").deliver(push(fcm_token()))
    assert (result.outcome, result.status) == (Outcome.FAILED, 403)


def test_latency_beyond_timeout_is_transport_retry(make_channel, ctl):
    channel = make_channel("fcm", timeout=0.5)
    assert channel.deliver(push(fcm_token())).outcome is Outcome.SENT  # token fetched
    ctl.add_fault(provider="fcm", latency_ms=1500, count=1)
    slow = push(fcm_token())
    result = channel.deliver(slow)
    assert (result.outcome, result.reason, result.status) == (Outcome.RETRY, "timeout", 0)
    assert result.maybe_delivered is True
    assert channel.deliver(push(fcm_token())).outcome is Outcome.SENT
    # The sandbox records the timed-out request when its latency is over: wait for it here, so
    # that it does not land among a later test's records.
    wait_until(lambda: ctl.records("fcm", delivery_id=slow.delivery_id), timeout=5, message="the late request")


def test_unreachable_token_endpoint_is_transport_retry(make_channel, ctl, tmp_path, configs):
    import json

    account = json.loads(open(configs["fcm"]["service_account_file"]).read())
    account["token_uri"] = "https://127.0.0.1:9/token"
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(account))
    result = make_channel("fcm", service_account_file=str(path), timeout=1).deliver(
        push(fcm_token()))
    assert (result.outcome, result.reason) == (Outcome.RETRY, "transport_error")
    assert result.maybe_delivered is False  # no access token, so no message POST


def test_refused_token_grant_is_retry_auth_refresh_failed(make_channel, ctl, tmp_path, configs):
    import json

    account = json.loads(open(configs["fcm"]["service_account_file"]).read())
    account["client_email"] = "someone-else@notify-sandbox.iam.gserviceaccount.com"
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(account))
    result = make_channel("fcm", service_account_file=str(path)).deliver(push(fcm_token()))
    assert (result.outcome, result.reason) == (Outcome.RETRY, "auth_refresh_failed")
    assert "invalid_grant" in result.raw["error"] and result.maybe_delivered is False
    assert len(token_requests(ctl)) == 1 and send_requests(ctl) == []
