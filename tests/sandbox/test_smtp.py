"""SMTP server driven by smtplib: STARTTLS and AUTH required, every DATA recorded."""

from __future__ import annotations

import smtplib
import ssl
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


def _connect(cfg, ca, *, starttls: bool = True, login: bool = True,
             password: str | None = None) -> smtplib.SMTP:
    s = cfg["smtp"]
    client = smtplib.SMTP(s["host"], s["port"], timeout=10)
    if starttls:
        client.starttls(context=ssl.create_default_context(cafile=ca))
    if login:
        client.login(s["username"], s["password"] if password is None else password)
    return client


def test_config_names_tls_credentials_and_sender(cfg, sandbox):
    s = cfg["smtp"]
    assert s["tls"] == "starttls" and s["from_address"] == "notify@example.com"
    assert s["username"] and len(s["password"]) >= 24
    env = sandbox.env
    assert (env["NOTIFY_SMTP_TLS"], env["NOTIFY_SMTP_USERNAME"], env["NOTIFY_SMTP_PASSWORD"],
            env["NOTIFY_SMTP_FROM"]) == (s["tls"], s["username"], s["password"],
                                         s["from_address"])


def test_records_message(ctl, cfg, ca):
    did = str(uuid.uuid4())
    with _connect(cfg, ca) as s:
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


def test_record_says_tls_and_user(ctl, cfg, ca):
    did = str(uuid.uuid4())
    with _connect(cfg, ca) as s:
        s.send_message(_message(did))
        s.send_message(_message(str(uuid.uuid4())))
    first, second = ctl.records("smtp")
    extra = first["extra"]
    assert extra["tls"] is True and extra["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert extra["user"] == cfg["smtp"]["username"]
    assert extra["peer"] == "127.0.0.1" and isinstance(extra["peer_port"], int)
    # one connection: same peer port on both records
    assert second["extra"]["peer_port"] == extra["peer_port"]


def test_auth_login_mechanism_works(ctl, cfg, ca):
    did = str(uuid.uuid4())
    with _connect(cfg, ca, login=False) as s:
        s.ehlo()
        s.user, s.password = cfg["smtp"]["username"], cfg["smtp"]["password"]
        code, _ = s.auth("LOGIN", s.auth_login)
        assert code == 235
        s.send_message(_message(did))
    assert ctl.wait_for("smtp", lambda x: x["delivery_id"] == did)["extra"]["user"] == \
        cfg["smtp"]["username"]


def test_without_starttls_is_refused(ctl, cfg):
    s = cfg["smtp"]
    with smtplib.SMTP(s["host"], s["port"], timeout=10) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        assert not client.has_extn("auth")  # AUTH is offered only over TLS
        with pytest.raises(smtplib.SMTPNotSupportedError):
            client.login(s["username"], s["password"])
        code, text = client.docmd("AUTH", "PLAIN")
        assert code == 530
        with pytest.raises(smtplib.SMTPSenderRefused) as exc:
            client.send_message(_message(str(uuid.uuid4())))
        assert exc.value.smtp_code == 530 and b"STARTTLS" in exc.value.smtp_error
    assert ctl.records("smtp") == []


def test_without_auth_is_refused(ctl, cfg, ca):
    with _connect(cfg, ca, login=False) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as exc:
            client.send_message(_message(str(uuid.uuid4())))
        assert exc.value.smtp_code == 530
    assert ctl.records("smtp") == []


def test_wrong_password_is_refused(ctl, cfg, ca):
    with pytest.raises(smtplib.SMTPAuthenticationError) as exc:
        _connect(cfg, ca, password="wrong")
    assert exc.value.smtp_code == 535
    assert ctl.records("smtp") == []


def test_server_certificate_is_the_sandbox_cas(cfg, ca):
    s = cfg["smtp"]
    with smtplib.SMTP(s["host"], s["port"], timeout=10) as client:  # host name checked
        assert client.starttls(context=ssl.create_default_context(cafile=ca))[0] == 220
    with smtplib.SMTP(s["host"], s["port"], timeout=10) as client:
        with pytest.raises(ssl.SSLCertVerificationError):
            client.starttls(context=ssl.create_default_context())  # system CAs only


def test_smtp_fault_reply_code(ctl, cfg, ca):
    ctl.add_fault(provider="smtp", status=451, reason="4.3.0 Try again later", count=1)
    with _connect(cfg, ca) as s:
        with pytest.raises(smtplib.SMTPDataError) as exc:
            s.send_message(_message(str(uuid.uuid4())))
        assert exc.value.smtp_code == 451
        s.send_message(_message(str(uuid.uuid4())))
    recs = ctl.records("smtp")
    assert [(r["status"], r["accepted"]) for r in recs] == [(451, False), (250, True)]
    assert all(r["extra"]["tls"] and r["extra"]["user"] for r in recs)
