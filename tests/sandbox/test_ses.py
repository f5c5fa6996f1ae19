"""SES v2 emulator (moto behind the sandbox layer) driven by boto3's ``sesv2`` client."""

from __future__ import annotations

import time
import uuid
from email.message import EmailMessage

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from .conftest import make_ses


def _simple(did: str, to: str = "user@example.org", html: str | None = "<p>Hi</p>"):
    body = {"Text": {"Data": "Hi"}}
    if html:
        body["Html"] = {"Data": html}
    return dict(
        Destination={"ToAddresses": [to], "CcAddresses": ["cc@example.org"]},
        Content={"Simple": {"Subject": {"Data": "Welcome"}, "Body": body, "Headers": [
            {"Name": "X-Notify-Delivery-Id", "Value": did},
            {"Name": "List-Unsubscribe", "Value": "<https://example.com/u/1>"},
            {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"}]}})


def test_send_simple_is_recorded(ctl, cfg, ses_client):
    did = str(uuid.uuid4())
    r = ses_client.send_email(FromEmailAddress=cfg["ses"]["from_address"], **_simple(did))
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 200 and r["MessageId"]
    rec = ctl.wait_for("ses", lambda x: x["delivery_id"] == did)
    assert rec["accepted"] and rec["to"] == "user@example.org"
    assert rec["path"] == "/v2/email/outbound-emails"
    e = rec["extra"]
    assert e["from_address"] == cfg["ses"]["from_address"]
    assert e["to"] == ["user@example.org"] and e["cc"] == ["cc@example.org"]
    assert e["subject"] == "Welcome" and e["text"] == "Hi" and e["html"] == "<p>Hi</p>"
    assert e["email_headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert e["message_id"] == r["MessageId"]
    assert ctl.inbox("ses", to="user@example.org")[0]["delivery_id"] == did


def test_send_raw_mime(ctl, cfg, ses_client):
    did = str(uuid.uuid4())
    msg = EmailMessage()
    msg["From"] = cfg["ses"]["from_address"]
    msg["To"] = "raw@example.org"
    msg["Subject"] = "Raw subject"
    msg["X-Notify-Delivery-Id"] = did
    msg.set_content("plain text")
    msg.add_alternative("<b>html</b>", subtype="html")
    ses_client.send_email(FromEmailAddress=cfg["ses"]["from_address"],
                          Destination={"ToAddresses": ["raw@example.org"]},
                          Content={"Raw": {"Data": msg.as_bytes()}})
    rec = ctl.wait_for("ses", lambda x: x["delivery_id"] == did)
    assert rec["extra"]["subject"] == "Raw subject"
    assert rec["extra"]["text"].strip() == "plain text"
    assert rec["extra"]["html"].strip() == "<b>html</b>"


def test_unverified_sender_is_rejected(ctl, ses_client):
    with pytest.raises(ClientError) as exc:
        ses_client.send_email(FromEmailAddress="someone@not-verified.org",
                              **_simple(str(uuid.uuid4())))
    assert exc.value.response["Error"]["Code"] == "MessageRejected"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    rec = ctl.records("ses")[-1]
    assert rec["accepted"] is False and rec["reason"] == "MessageRejected"


def test_sigv4_is_checked(ctl, cfg, ca):
    bad_secret = make_ses(cfg, ca, secret="x" * 40)
    with pytest.raises(ClientError) as exc:
        bad_secret.send_email(FromEmailAddress=cfg["ses"]["from_address"],
                              **_simple(str(uuid.uuid4())))
    assert exc.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    bad_key = make_ses(cfg, ca, key_id="AKIAXXXXXXXXXXXXXXXX")
    with pytest.raises(ClientError) as exc:
        bad_key.list_email_identities()
    assert exc.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert all(not r["accepted"] for r in ctl.records("ses"))


def test_identities_verified_in_moto(ses_client, cfg):
    names = {i["IdentityName"]: i for i in ses_client.list_email_identities()["EmailIdentities"]}
    assert names["example.com"]["VerificationStatus"] == "SUCCESS"
    got = ses_client.get_email_identity(EmailIdentity=cfg["ses"]["from_address"])
    assert got["VerifiedForSendingStatus"] is True


@pytest.mark.parametrize("status, code", [
    (429, "TooManyRequestsException"),
    (400, "MessageRejected"),
    (400, "AccountSendingPausedException"),
])
def test_faults_raise_client_errors(ctl, cfg, ca, status, code):
    s = cfg["ses"]
    client = make_ses(cfg, ca, config=Config(retries={"total_max_attempts": 1}))
    ctl.add_fault(provider="ses", status=status, reason=code, count=1, retry_after=3)
    with pytest.raises(ClientError) as exc:
        client.send_email(FromEmailAddress=s["from_address"], **_simple(str(uuid.uuid4())))
    err = exc.value.response
    assert err["Error"]["Code"] == code
    assert err["ResponseMetadata"]["HTTPStatusCode"] == status
    assert err["ResponseMetadata"]["HTTPHeaders"]["retry-after"] == "3"
    assert err["Error"]["Message"]
    # count=1: the next send goes through
    assert client.send_email(FromEmailAddress=s["from_address"],
                             **_simple(str(uuid.uuid4())))["MessageId"]
    recs = ctl.records("ses")
    assert [(r["status"], r["accepted"]) for r in recs] == [(status, False), (200, True)]


def test_throttling_is_retried_by_botocore_default(ctl, cfg, ses_client):
    ctl.add_fault(provider="ses", status=429, reason="TooManyRequestsException", count=1)
    t = time.monotonic()
    r = ses_client.send_email(FromEmailAddress=cfg["ses"]["from_address"],
                              **_simple(str(uuid.uuid4())))
    assert r["MessageId"] and time.monotonic() - t < 10
    assert [x["status"] for x in ctl.records("ses")] == [429, 200]


def test_fault_matches_any_recipient(ctl, cfg, ca, ses_client):
    ctl.add_fault(provider="ses", status=400, reason="MessageRejected", to="cc@example.org")
    with pytest.raises(ClientError):
        ses_client.send_email(FromEmailAddress=cfg["ses"]["from_address"],
                              **_simple(str(uuid.uuid4())))
    r = ses_client.send_email(FromEmailAddress=cfg["ses"]["from_address"],
                              Destination={"ToAddresses": ["other@example.org"]},
                              Content={"Simple": {"Subject": {"Data": "s"},
                                                  "Body": {"Text": {"Data": "t"}}}})
    assert r["MessageId"]
