"""TwilioSMSChannel against the sandbox's Twilio Messages API (the real ``twilio`` client)."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

import secrets

import pytest
from twilio.request_validator import RequestValidator

from channels.base import Message, Outcome
from channels.errors import ChannelConfigurationError
from channels.sms_segments import segments
from channels.twilio_sms import OPT_OUT_CODES, TwilioSMSChannel

from .channel_support import KOREAN_BODY, connections_opened, new_id, only_record

CALLBACK = "https://notify.example.com/hooks/twilio/status?app=7"  # not loopback: never called
TO = "+821012345678"


def sms_message(body: str = KOREAN_BODY, to: str = TO, delivery_id: str | None = None,
                status_callback: str | None = CALLBACK) -> Message:
    return Message(delivery_id or new_id(), to, {"body": body}, status_callback=status_callback)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_sent_with_form_fields_auth_and_callback(sms, ctl, configs):
    """The sandbox's config has an API key: it authenticates, the account is still the URL's."""
    did = new_id()
    result = sms.deliver(sms_message(delivery_id=did))

    assert result.outcome is Outcome.SENT and result.status == 201
    assert result.provider_message_id.startswith("SM") and len(result.provider_message_id) == 34
    rec = only_record(ctl, "twilio", did)
    account, key = configs["sms"]["account_sid"], configs["sms"]["api_key_sid"]
    assert rec["path"] == f"/2010-04-01/Accounts/{account}/Messages.json"
    assert rec["headers"]["authorization"] == basic(key, configs["sms"]["api_key_secret"])
    assert (rec["extra"]["account_sid"], rec["extra"]["auth"]) == (account, f"api_key:{key}")
    form = rec["body"]
    assert form["To"] == TO and form["Body"] == KOREAN_BODY
    # both configured: the Messaging Service is used, no From
    assert form["MessagingServiceSid"] == configs["sms"]["messaging_service_sid"]
    assert "From" not in form
    callback = urlsplit(form["StatusCallback"])
    assert parse_qs(callback.query) == {"app": ["7"], "delivery_id": [did]}
    assert (rec["extra"]["segments"], rec["extra"]["encoding"]) == segments(KOREAN_BODY)


def test_without_an_api_key_the_auth_token_authenticates(make_channel, ctl, configs):
    channel = make_channel("sms", api_key_sid="", api_key_secret="")
    did = new_id()
    assert channel.deliver(sms_message(delivery_id=did)).outcome is Outcome.SENT
    rec = only_record(ctl, "twilio", did)
    account = configs["sms"]["account_sid"]
    assert rec["headers"]["authorization"] == basic(account, configs["sms"]["auth_token"])
    assert (rec["extra"]["account_sid"], rec["extra"]["auth"]) == (account, "auth_token")


def test_an_api_key_sender_still_verifies_webhooks_with_the_auth_token(sms, configs):
    url = "https://notify.example.com/webhooks/twilio/status?delivery_id=1"
    fields = {"MessageSid": "SM" + "0" * 32, "MessageStatus": "delivered"}

    def signed_with(key: str) -> dict[str, str]:
        return {"X-Twilio-Signature": RequestValidator(key).compute_signature(url, fields)}

    assert sms.verify_webhook(url, fields, signed_with(configs["sms"]["auth_token"]))
    assert not sms.verify_webhook(url, fields, signed_with(configs["sms"]["api_key_secret"]))


def test_from_number_when_no_messaging_service(make_channel, ctl, configs):
    channel = make_channel("sms", messaging_service_sid="")
    did = new_id()
    assert channel.deliver(sms_message("plain GSM text", delivery_id=did)).outcome \
        is Outcome.SENT
    form = only_record(ctl, "twilio", did)["body"]
    assert form["From"] == configs["sms"]["from_number"] and "MessagingServiceSid" not in form


def test_no_status_callback_option(sms, ctl):
    result = sms.deliver(Message(new_id(), TO, {"body": "hi"}))
    assert result.outcome is Outcome.SENT
    assert "StatusCallback" not in ctl.records("twilio")[0]["body"]


@pytest.mark.parametrize("body", [
    "a" * 160, "a" * 161, "€" * 81, "a" * 152 + "€" + "a" * 152, KOREAN_BODY, "안" * 70,
    "안" * 71, "😀" * 36, "a" * 66 + "😀" * 3, "Héllo ñ Ç {ok} [x] ~ | ^ \\",
])
def test_segment_count_matches_the_provider(sms, ctl, body):
    did = new_id()
    assert sms.deliver(sms_message(body, delivery_id=did)).outcome is Outcome.SENT
    extra = only_record(ctl, "twilio", did)["extra"]
    assert (extra["segments"], extra["encoding"]) == segments(body)


def test_client_and_connection_reused(make_channel, ctl):
    channel = make_channel("sms")
    client, session = channel.client, channel.http_client.session
    for _ in range(8):
        assert channel.deliver(sms_message()).outcome is Outcome.SENT
    assert channel.client is client and channel.http_client.session is session
    assert connections_opened(session, channel.config["url"]) == 1


def test_opted_out_recipient_is_a_recipient_refusal_21610(sms, ctl):
    result = sms.deliver(sms_message(to="+15005550004"))  # Twilio's magic opted-out number
    assert (result.outcome, result.reason, result.status) == (Outcome.RECIPIENT_REFUSED, "21610", 400)
    assert OPT_OUT_CODES == {"21610"}


def test_opt_out_from_fault_rule(sms, ctl):
    ctl.add_fault(provider="twilio", status=400, code=21610, count=1)
    result = sms.deliver(sms_message())
    assert (result.outcome, result.reason) == (Outcome.RECIPIENT_REFUSED, "21610")


@pytest.mark.parametrize("to, code", [("+15005550001", "21211"), ("+15005550002", "21612"),
                                      ("+15005550003", "21408"), ("+15005550009", "21614")])
def test_unusable_numbers_fail(sms, ctl, to, code):
    result = sms.deliver(sms_message(to=to))
    assert (result.outcome, result.reason, result.status) == (Outcome.FAILED, code, 400)


def test_too_many_requests_retries_with_retry_after(sms, ctl):
    ctl.add_fault(provider="twilio", status=429, code=20429, retry_after=9, count=1)
    result = sms.deliver(sms_message())
    assert (result.outcome, result.reason, result.status, result.retry_after) == \
        (Outcome.RETRY, "20429", 429, 9.0)


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_retry(sms, ctl, status):
    ctl.add_fault(provider="twilio", status=status, count=1)
    result = sms.deliver(sms_message())
    assert (result.outcome, result.status, result.retry_after) == (Outcome.RETRY, status, None)


@pytest.mark.parametrize("wrong", [
    {"api_key_sid": "", "api_key_secret": "", "auth_token": "0" * 32},  # a wrong auth token
    {"api_key_secret": "0" * 32},  # a wrong API key secret
    {"api_key_sid": "SK" + "0" * 32},  # an API key the account does not have
], ids=["auth_token", "api_key_secret", "api_key_sid"])
def test_wrong_credentials_fail(make_channel, ctl, wrong):
    """Twilio's 401 (20003) is a permanent failure of the message, whichever credential it was."""
    result = make_channel("sms", **wrong).deliver(sms_message())
    assert (result.outcome, result.reason, result.status) == (Outcome.FAILED, "20003", 401)
    (rec,) = ctl.records("twilio")
    assert rec["status"] == 401 and "auth" not in rec["extra"]


def test_an_api_key_of_another_account_is_refused(make_channel, ctl, configs):
    other = {"account_sid": "AC" + secrets.token_hex(16), "auth_token": secrets.token_hex(16),
             "api_key_sid": "SK" + secrets.token_hex(16), "api_key_secret": secrets.token_hex(16)}
    ctl.add_twilio_account(**other)
    channel = make_channel("sms", api_key_sid=other["api_key_sid"], api_key_secret=other["api_key_secret"])
    result = channel.deliver(sms_message())  # the key is the other account's, the URL names ours
    assert (result.outcome, result.reason, result.status) == (Outcome.FAILED, "20003", 401)
    assert ctl.records("twilio")[0]["extra"]["account_sid"] == other["account_sid"]


@pytest.mark.parametrize("change, named", [
    ({"api_key_secret": ""}, "together"),  # a key without its secret
    ({"api_key_sid": ""}, "together"),  # a secret without its key
    ({"api_key_sid": "AC" + "0" * 32}, "api_key_sid must be SK"),  # an account SID is not a key
    ({"api_key_sid": "SK" + "0" * 31}, "api_key_sid must be SK"),
    ({"api_key_sid": "SK" + "A" * 32}, "api_key_sid must be SK"),  # upper-case hex: not how Twilio writes SIDs
    ({"auth_token": ""}, "auth_token"),  # an API key does not replace the token webhooks are verified with
    ({"auth_token": "", "api_key_sid": "", "api_key_secret": ""}, "auth_token"),  # no credential at all
])
def test_credential_combinations_the_adapter_refuses(configs, change, named):
    with pytest.raises(ChannelConfigurationError, match=named) as refused:
        TwilioSMSChannel({**configs["sms"], **change})
    assert configs["sms"]["api_key_secret"] not in str(refused.value)


def test_latency_beyond_timeout_is_transport_retry(make_channel, ctl):
    channel = make_channel("sms", timeout=0.5)
    ctl.add_fault(provider="twilio", latency_ms=1500, count=1)
    result = channel.deliver(sms_message())
    assert (result.outcome, result.reason, result.status) == (Outcome.RETRY, "timeout", 0)
    assert result.maybe_delivered is True
    assert not TwilioSMSChannel.collapses_resends  # a resend here may text twice
    assert channel.deliver(sms_message()).outcome is Outcome.SENT


def test_connection_refused_is_transport_retry(make_channel):
    channel = make_channel("sms", url="https://127.0.0.1:9", timeout=1)
    result = channel.deliver(sms_message())
    assert (result.outcome, result.reason) == (Outcome.RETRY, "transport_error")
    assert result.maybe_delivered is False


@pytest.mark.parametrize("body, to, reason", [
    ("가" * 1601, TO, "body_too_long"), ("", TO, "empty_body"),
    ("hi", "01012345678", "invalid_number"), ("hi", "+0123", "invalid_number"),
])
def test_invalid_messages_fail_before_any_request(sms, ctl, body, to, reason):
    result = sms.deliver(Message(new_id(), to, {"body": body}))
    assert (result.outcome, result.reason) == (Outcome.FAILED, reason)
    assert ctl.records("twilio") == []


def test_1600_characters_is_accepted_when_the_segment_cap_allows(make_channel, ctl):
    assert make_channel("sms", max_segments="24").deliver(sms_message("가" * 1600)).outcome is Outcome.SENT


def test_the_default_segment_cap_is_ten(sms, ctl):
    ok, over = sms.deliver(sms_message("a" * 1530)), sms.deliver(sms_message("a" * 1531))  # 10 and 11 segments
    assert ok.outcome is Outcome.SENT
    assert (over.outcome, over.reason) == (Outcome.FAILED, "too_many_segments")
