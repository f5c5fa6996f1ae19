"""SMTP sink driven by smtplib."""

from __future__ import annotations

import smtplib
import uuid
from email.message import EmailMessage

import pytest


def _message(did: str, to: str = "bob@example.org") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "notify@example.com"
    msg["To"] = to
    msg["Subject"] = "Hello SMTP"
    msg["X-Notify-Delivery-Id"] = did
    msg.set_content("text body")
    msg.add_alternative("<p>html body</p>", subtype="html")
    return msg


def test_records_message(ctl, cfg):
    did = str(uuid.uuid4())
    with smtplib.SMTP(cfg["smtp"]["host"], cfg["smtp"]["port"], timeout=10) as s:
        s.send_message(_message(did))
    rec = ctl.wait_for("smtp", lambda x: x["delivery_id"] == did)
    assert rec["accepted"] and rec["status"] == 250 and rec["to"] == "bob@example.org"
    assert rec["body"]["mail_from"] == "notify@example.com"
    assert rec["body"]["rcpt_tos"] == ["bob@example.org"]
    assert rec["body"]["subject"] == "Hello SMTP"
    assert rec["body"]["text"].strip() == "text body"
    assert rec["body"]["html"].strip() == "<p>html body</p>"
    assert rec["headers"]["X-Notify-Delivery-Id"] == did
    assert ctl.inbox("smtp", to="bob@example.org")[0]["delivery_id"] == did


def test_smtp_fault_reply_code(ctl, cfg):
    ctl.add_fault(provider="smtp", status=451, reason="4.3.0 Try again later", count=1)
    with smtplib.SMTP(cfg["smtp"]["host"], cfg["smtp"]["port"], timeout=10) as s:
        with pytest.raises(smtplib.SMTPDataError) as exc:
            s.send_message(_message(str(uuid.uuid4())))
        assert exc.value.smtp_code == 451
        s.send_message(_message(str(uuid.uuid4())))
    recs = ctl.records("smtp")
    assert [(r["status"], r["accepted"]) for r in recs] == [(451, False), (250, True)]
