"""SESEmailChannel against the sandbox's SES v2 (SigV4-checked, moto behind a fault layer)."""

from __future__ import annotations

from email.header import decode_header, make_header
from email.policy import default as DEFAULT_POLICY

import pytest

from channels.base import Message, Outcome
from channels.ses_email import SESEmailChannel

from .channel_support import KOREAN_BODY, KOREAN_TITLE, new_id, only_record

TO = "minji@example.org"
UNSUBSCRIBE = "https://notify.example.com/u/6b1f"


def mail(delivery_id: str | None = None, to: str = TO, **kw) -> Message:
    content = kw.pop("content", {"subject": KOREAN_TITLE, "text": KOREAN_BODY,
                                 "html": f"<p>{KOREAN_BODY}</p>",
                                 "headers": {"X-Campaign": "autumn"}})
    return Message(delivery_id or new_id(), to, content, **kw)


def test_sent_with_from_to_subject_body_and_headers(email, ctl, configs):
    did = new_id()
    result = email.deliver(mail(did, unsubscribe_url=UNSUBSCRIBE))

    assert result.outcome is Outcome.SENT and result.status == 200
    assert result.provider_message_id
    rec = only_record(ctl, "ses", did)
    assert rec["path"] == "/v2/email/outbound-emails"
    assert rec["headers"]["authorization"].startswith("AWS4-HMAC-SHA256 Credential=" +
                                                      configs["email"]["access_key_id"])
    extra = rec["extra"]
    assert extra["from_address"] == configs["email"]["from_address"]
    assert extra["to"] == [TO]
    assert extra["subject"] == KOREAN_TITLE
    assert extra["text"] == KOREAN_BODY and extra["html"] == f"<p>{KOREAN_BODY}</p>"
    headers = extra["email_headers"]
    assert headers["X-Notify-Delivery-Id"] == did
    assert headers["X-Campaign"] == "autumn"
    assert headers["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert extra["message_id"] == result.provider_message_id
    assert rec["body"]["EmailTags"] == [{"Name": "delivery_id", "Value": did}]  # SES events carry it back


def test_text_only_without_unsubscribe(email, ctl):
    did = new_id()
    result = email.deliver(mail(did, content={"subject": "Hi", "text": "plain"}))
    assert result.outcome is Outcome.SENT
    extra = only_record(ctl, "ses", did)["extra"]
    assert extra["html"] in (None, "") and "List-Unsubscribe" not in extra["email_headers"]


def test_configuration_set_is_passed(make_channel, ctl):
    channel = make_channel("email", configuration_set="notify-events")
    did = new_id()
    assert channel.deliver(mail(did)).outcome is Outcome.SENT
    assert only_record(ctl, "ses", did)["body"]["ConfigurationSetName"] == "notify-events"


def test_client_reused_and_no_botocore_retries(make_channel, ctl):
    channel = make_channel("email")
    client = channel.client
    ctl.add_fault(provider="ses", status=503, reason="ServiceUnavailable", count=1)
    assert channel.deliver(mail()).outcome is Outcome.RETRY
    for _ in range(5):
        assert channel.deliver(mail()).outcome is Outcome.SENT
    assert channel.client is client
    assert len(ctl.records("ses")) == 6  # the 503 was sent exactly once


def test_throttling_retries_with_retry_after(email, ctl):
    ctl.add_fault(provider="ses", status=429, reason="TooManyRequestsException", retry_after=3,
                  count=1)
    result = email.deliver(mail())
    assert (result.outcome, result.reason, result.status, result.retry_after) == \
        (Outcome.RETRY, "TooManyRequestsException", 429, 3.0)


@pytest.mark.parametrize("status, reason", [(400, "AccountSendingPausedException"),
                                            (400, "SendingPausedException"),
                                            (400, "LimitExceededException"),
                                            (500, "InternalFailure"),
                                            (503, "ServiceUnavailable")])
def test_paused_and_server_errors_retry(email, ctl, status, reason):
    ctl.add_fault(provider="ses", status=status, reason=reason, count=1)
    result = email.deliver(mail())
    assert (result.outcome, result.reason, result.status) == (Outcome.RETRY, reason, status)


@pytest.mark.parametrize("status, reason", [(400, "MessageRejected"),
                                            (400, "MailFromDomainNotVerifiedException"),
                                            (400, "BadRequestException"),
                                            (404, "NotFoundException"),
                                            (400, "AccountSuspendedException")])
def test_permanent_errors_fail(email, ctl, status, reason):
    ctl.add_fault(provider="ses", status=status, reason=reason, count=1)
    result = email.deliver(mail())
    assert (result.outcome, result.reason, result.status) == (Outcome.FAILED, reason, status)


def test_unverified_sender_is_rejected_by_the_service(make_channel, ctl):
    result = make_channel("email", from_address="ops@unverified.test").deliver(mail())
    assert (result.outcome, result.reason) == (Outcome.FAILED, "MessageRejected")


def test_bad_secret_fails_signature_check(make_channel, ctl):
    result = make_channel("email", secret_access_key="x" * 40).deliver(mail())
    assert (result.outcome, result.status) == (Outcome.FAILED, 403)
    assert result.reason in ("InvalidSignatureException", "SignatureDoesNotMatch")


def test_latency_beyond_timeout_is_transport_retry(make_channel, ctl):
    channel = make_channel("email", timeout=0.5)
    ctl.add_fault(provider="ses", latency_ms=1500, count=1)
    result = channel.deliver(mail())
    assert (result.outcome, result.reason, result.status) == (Outcome.RETRY, "timeout", 0)
    assert result.maybe_delivered is True
    assert not SESEmailChannel.collapses_resends
    assert channel.deliver(mail()).outcome is Outcome.SENT


def test_connection_refused_is_transport_retry(make_channel):
    channel = make_channel("email", endpoint_url="https://127.0.0.1:9", timeout=1)
    result = channel.deliver(mail())
    assert (result.outcome, result.reason) == (Outcome.RETRY, "transport_error")
    assert result.maybe_delivered is False


def test_endpoint_from_environment(configs, ctl, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_SESV2", configs["email"]["endpoint_url"])
    channel = SESEmailChannel({k: v for k, v in configs["email"].items() if k != "endpoint_url"})
    try:
        did = new_id()
        assert channel.deliver(mail(did)).outcome is Outcome.SENT
        only_record(ctl, "ses", did)
    finally:
        channel.close()


@pytest.mark.parametrize("to, content, unsubscribe, reason", [
    ("not-an-address", {"subject": "s", "text": "t"}, None, "invalid_address"),
    ("a@b.c, x@y.z", {"subject": "s", "text": "t"}, None, "invalid_address"),
    (TO, {"subject": "", "text": "t"}, None, "empty_subject"),
    (TO, {"subject": "s"}, None, "empty_body"),
    (TO, {"subject": "s\r\nBcc: x@y.z", "text": "t"}, None, "invalid_header"),
    (TO, {"subject": "s\u2028Bcc: x@y.z", "text": "t"}, None, "invalid_header"),
    (TO, {"subject": "s", "text": "t", "headers": {"X-A": "1\nX-B: 2"}}, None, "invalid_header"),
    (TO, {"subject": "s", "text": "t"}, "http://x.test/u", "invalid_list_unsubscribe"),
])
def test_invalid_messages_fail_before_any_request(email, ctl, to, content, unsubscribe, reason):
    did = new_id()
    result = email.deliver(Message(did, to, content, unsubscribe_url=unsubscribe))
    assert (result.outcome, result.reason) == (Outcome.FAILED, reason)
    # By delivery id: the delayed request of the latency test above may still land meanwhile.
    assert ctl.records("ses", delivery_id=did) == []


# -- the sender's display name (content "from_name") -------------------------------------------
def sender_of(header_value: str):
    """The one mailbox of a From value, decoded as a mail reader does (RFC 2047, quoting)."""
    (mailbox,) = DEFAULT_POLICY.header_factory("From", header_value).addresses
    return mailbox.display_name, mailbox.addr_spec


@pytest.mark.parametrize("name, written", [
    ("김지우 Store 🛍", "=?utf-8?b?"),  # not ASCII: RFC 2047 encoded word
    ("O'Brien & Co", "O'Brien & Co <"),  # ' and & are atext: no quotes needed
    ('Acme, Inc. "Help" <ceo@bank.test>', '"Acme, Inc. \\"Help\\" <ceo@bank.test>" <'),  # specials: quoted
])
def test_from_name_is_the_display_name_of_the_configured_sender(email, ctl, configs, name, written):
    did = new_id()
    result = email.deliver(mail(did, content={"from_name": name, "subject": "s", "text": "t"}))
    assert result.outcome is Outcome.SENT, result
    sent = only_record(ctl, "ses", did)["extra"]["from_address"]
    assert sent.isascii() and sent.startswith(written), sent
    assert sender_of(sent) == (name, configs["email"]["from_address"])


def test_a_long_display_name_is_encoded_words_of_at_most_75_characters(email, configs):
    name = "가나다라마바사 " * 12 + "🛍"
    sent = email.build_payload(mail(content={"from_name": name, "subject": "s", "text": "t"}))[
        "FromEmailAddress"]
    words = sent.split(" ")
    assert words[-1] == f"<{configs['email']['from_address']}>"
    assert len(words) > 2 and all(w.startswith("=?utf-8?b?") and len(w) <= 75 for w in words[:-1])
    # Adjacent encoded words join with nothing between them (RFC 2047 §6.2).
    assert str(make_header(decode_header(sent))) == f"{name} <{configs['email']['from_address']}>"


@pytest.mark.parametrize("name", ["Shop\r\nBcc: x@y.z", "Shop\nBcc: x@y.z", "Shop\rX", "Shop\u2028Bcc: x@y.z",
                                  "Shop\u2029", "Shop\x85", "Shop\x00"])
def test_a_display_name_that_breaks_a_header_line_fails_before_any_request(email, ctl, name):
    did = new_id()
    result = email.deliver(mail(did, content={"from_name": name, "subject": "s", "text": "t"}))
    assert (result.outcome, result.reason) == (Outcome.FAILED, "invalid_header")
    # By delivery id: the delayed request of the latency test above may still land meanwhile.
    assert ctl.records("ses", delivery_id=did) == []
