"""SMTPEmailChannel against the sandbox's SMTP server (STARTTLS and AUTH required, aiosmtpd)."""

from __future__ import annotations

import smtplib
import socket
import threading
from email.header import decode_header, make_header
from email.policy import default as DEFAULT_POLICY

import pytest
from aiosmtpd.controller import Controller

from channels.base import Message, Outcome
from channels.errors import ChannelConfigurationError
from channels.smtp_email import SMTPEmailChannel

from .channel_support import KOREAN_BODY, KOREAN_TITLE, new_id, only_record

TO = "minji@example.org"
UNSUBSCRIBE = "https://notify.example.com/u/6b1f"


def mail(delivery_id: str | None = None, to: str = TO, **kw) -> Message:
    content = kw.pop("content", {"subject": "Your order has shipped", "text": "On its way.",
                                 "html": "<p>On its way.</p>",
                                 "headers": {"X-Campaign": "autumn"}})
    return Message(delivery_id or new_id(), to, content, **kw)


def body_text(value: str | None) -> str | None:
    """A decoded text part without MIME's canonical CRLF line ends and final line break."""
    return None if value is None else value.replace("\r\n", "\n").rstrip("\n")


def count_opens(channel) -> list[int]:
    """Wrap the adapter's connect step; the list grows by one per connection opened."""
    opened: list[int] = []
    original = channel._open

    def counting():
        opened.append(1)
        return original()

    channel._open = counting
    return opened


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- what arrives --------------------------------------------------------------------------------
def test_sent_over_starttls_with_auth_and_all_headers(smtp, ctl, configs):
    did = new_id()
    result = smtp.deliver(mail(did, unsubscribe_url=UNSUBSCRIBE))

    assert (result.outcome, result.status) == (Outcome.SENT, 250)
    rec = only_record(ctl, "smtp", did)
    assert rec["accepted"] and rec["to"] == TO
    assert rec["extra"]["tls"] is True and rec["extra"]["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert rec["extra"]["user"] == configs["smtp"]["username"]
    body = rec["body"]
    assert body["mail_from"] == configs["smtp"]["from_address"] and body["rcpt_tos"] == [TO]
    assert body["subject"] == "Your order has shipped"
    assert body_text(body["text"]) == "On its way."
    assert body_text(body["html"]) == "<p>On its way.</p>"
    headers = rec["headers"]
    assert headers["From"] == configs["smtp"]["from_address"] and headers["To"] == TO
    assert headers["X-Notify-Delivery-Id"] == did
    assert headers["X-SES-MESSAGE-TAGS"] == f"delivery_id={did}"  # SES's SMTP interface: a message tag
    assert headers["X-Campaign"] == "autumn"
    assert headers["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert headers["Content-Type"].startswith("multipart/alternative")
    assert headers["Date"]
    assert result.provider_message_id == headers["Message-ID"]
    assert result.provider_message_id.endswith("@example.com>")
    assert result.raw["reply"].startswith("250 ")


def test_long_unsubscribe_url_stays_one_url(smtp, ctl):
    # A real one-click URL is longer than a folded header line; RFC 2369 / 8058 allow no
    # RFC 2047 encoded words in List-Unsubscribe, so it must go out as written.
    url = f"{UNSUBSCRIBE}/{'a' * 120}?sig={'0f' * 32}"
    message = mail(unsubscribe_url=url)
    assert f"\r\nList-Unsubscribe: <{url}>\r\n".encode() in smtp.build_payload(message).data
    assert smtp.deliver(message).outcome is Outcome.SENT
    rec = only_record(ctl, "smtp", message.delivery_id)
    assert rec["headers"]["List-Unsubscribe"] == f"<{url}>"


def test_text_only_without_unsubscribe(smtp, ctl):
    did = new_id()
    result = smtp.deliver(mail(did, content={"subject": "Hi", "text": "plain"}))
    assert result.outcome is Outcome.SENT
    rec = only_record(ctl, "smtp", did)
    assert rec["body"]["html"] is None and rec["headers"]["Content-Type"].startswith("text/plain")
    assert "List-Unsubscribe" not in rec["headers"]
    assert "List-Unsubscribe-Post" not in rec["headers"]


def test_html_only(smtp, ctl):
    did = new_id()
    assert smtp.deliver(mail(did, content={"subject": "Hi", "html": "<b>x</b>"})).outcome \
        is Outcome.SENT
    rec = only_record(ctl, "smtp", did)
    assert rec["body"]["text"] is None and body_text(rec["body"]["html"]) == "<b>x</b>"


def test_korean_and_emoji_arrive_intact(smtp, ctl):
    did = new_id()
    message = mail(did, content={"subject": KOREAN_TITLE, "text": KOREAN_BODY,
                                 "html": f"<p>{KOREAN_BODY}</p>",
                                 "headers": {"X-Campaign": "가을 🍂"}})
    wire = smtp.build_payload(message).data
    assert wire.isascii()  # RFC 2047 headers, base64 / quoted-printable bodies: no 8BITMIME
    assert b"\r\nSubject: =?utf-8?" in wire
    result = smtp.deliver(message)
    assert result.outcome is Outcome.SENT
    rec = only_record(ctl, "smtp", did)
    assert rec["body"]["subject"] == KOREAN_TITLE
    assert body_text(rec["body"]["text"]) == KOREAN_BODY
    assert body_text(rec["body"]["html"]) == f"<p>{KOREAN_BODY}</p>"
    assert rec["headers"]["X-Campaign"] == "가을 🍂"


def test_internationalised_domain_in_punycode(smtp, ctl):
    did = new_id()
    to = "user@xn--bcher-kva.example"  # bücher.example
    result = smtp.deliver(mail(did, to=to))
    assert result.outcome is Outcome.SENT
    rec = only_record(ctl, "smtp", did)
    assert rec["to"] == to and rec["body"]["rcpt_tos"] == [to] and rec["headers"]["To"] == to


def from_line(wire: bytes) -> str:
    """The From value of a serialised message, unfolded (RFC 5322 §2.2.3: CRLF before WSP
    removed)."""
    head = wire.split(b"\r\n\r\n", 1)[0].decode("ascii").replace("\r\n ", " ").replace("\r\n\t", "\t")
    return next(line[len("From: "):] for line in head.split("\r\n") if line.startswith("From: "))


def sender_of(header_value: str):
    """The one mailbox of a From value, decoded as a mail reader does (RFC 2047, quoting)."""
    (mailbox,) = DEFAULT_POLICY.header_factory("From", header_value).addresses
    return mailbox.display_name, mailbox.addr_spec


@pytest.mark.parametrize("name, written", [
    ("김지우 Store 🛍", "=?utf-8?b?"),  # not ASCII: RFC 2047 encoded word
    ("O'Brien & Co", "O'Brien & Co <"),  # ' and & are atext: no quotes needed
    ('김 "x" <ceo@bank.test>, z', "=?utf-8?b?"),  # specials inside the encoded word stay there
    ('Acme, Inc. "Help" <ceo@bank.test>', '"Acme, Inc. \\"Help\\" <ceo@bank.test>" <'),  # quoted
])
def test_from_name_is_the_display_name_and_the_envelope_keeps_the_address(smtp, ctl, configs,
                                                                          name, written):
    did = new_id()
    message = mail(did, content={"from_name": name, "subject": "s", "text": "t"})
    address = configs["smtp"]["from_address"]
    wire = smtp.build_payload(message).data
    assert wire.isascii()
    header = from_line(wire)
    assert header.startswith(written) and header.endswith(f" <{address}>"), header
    assert sender_of(header) == (name, address)
    assert smtp.deliver(message).outcome is Outcome.SENT
    rec = only_record(ctl, "smtp", did)
    assert rec["body"]["mail_from"] == address  # the envelope sender stays the bare address
    assert sender_of(rec["headers"]["From"]) == (name, address)  # as the server decoded it


def test_a_long_display_name_folds_between_encoded_words(smtp, configs):
    name = "가나다라마바사 " * 12 + "🛍"
    wire = smtp.build_payload(mail(content={"from_name": name, "subject": "s", "text": "t"})).data
    head = wire.split(b"\r\n\r\n", 1)[0].decode("ascii")
    assert all(len(line) <= 78 for line in head.split("\r\n"))
    header = from_line(wire)
    words = header.split(" ")
    assert all(w.startswith("=?utf-8?b?") and len(w) <= 75 for w in words[:-1]), header
    # Adjacent encoded words join with nothing between them (RFC 2047 §6.2).
    assert str(make_header(decode_header(header))) == f"{name} <{configs['smtp']['from_address']}>"


@pytest.mark.parametrize("name", ["Shop\r\nBcc: x@y.z", "Shop\nBcc: x@y.z", "Shop\rX",
                                  "Shop\u2028Bcc: x@y.z", "Shop\u2029", "Shop\x85", "Shop\x00"])
def test_a_display_name_that_breaks_a_header_line_fails_before_any_transaction(make_channel, ctl,
                                                                                name):
    channel = make_channel("smtp")
    opened = count_opens(channel)
    did = new_id()
    result = channel.deliver(mail(did, content={"from_name": name, "subject": "s", "text": "t"}))
    assert (result.outcome, result.reason) == (Outcome.FAILED, "invalid_header")
    assert opened == [] and ctl.records("smtp", delivery_id=did) == []


@pytest.mark.parametrize("to, content, reason", [
    (TO, {"subject": "s\r\nBcc: x@y.z", "text": "t"}, "invalid_header"),
    (TO, {"subject": "s\nBcc: x@y.z", "text": "t"}, "invalid_header"),
    (TO, {"subject": "line\u2028break", "text": "t"}, "invalid_header"),
    (TO, {"subject": "s", "text": "t", "headers": {"X-A": "1\r\nX-B: 2"}}, "invalid_header"),
    (TO, {"subject": "s", "text": "t", "headers": {"Bcc": "x@y.z"}}, "invalid_header"),
    (TO, {"subject": "s", "text": "t", "headers": {"Subject": "again"}}, "invalid_header"),
    (TO, {"subject": "s", "text": "t", "headers": {"Content-Type": "text/html"}},
     "invalid_header"),
    (TO, {"subject": "s", "text": "t", "headers": {"Bad Name": "x"}}, "invalid_header"),
    (TO, {"subject": "s", "text": "t", "headers": {"X-SES-Message-Tags": "delivery_id=x"}}, "invalid_header"),
    ("지우@example.com", {"subject": "s", "text": "t"}, "invalid_address"),
    ("user@bücher.example", {"subject": "s", "text": "t"}, "invalid_address"),
    ("a@b.c, x@y.z", {"subject": "s", "text": "t"}, "invalid_address"),
    (TO, {"subject": "s"}, "empty_body"),
])
def test_invalid_messages_fail_before_any_smtp_transaction(make_channel, ctl, to, content,
                                                           reason):
    channel = make_channel("smtp")
    opened = count_opens(channel)
    result = channel.deliver(Message(new_id(), to, content))
    assert (result.outcome, result.reason) == (Outcome.FAILED, reason)
    assert opened == [] and ctl.records("smtp") == []


@pytest.mark.parametrize("url", ["http://notify.example.com/u/1",
                                 f"https://notify.example.com/u/{'a' * 1000}"])
def test_unusable_unsubscribe_url_is_refused(smtp, ctl, url):
    result = smtp.deliver(mail(unsubscribe_url=url))
    assert (result.outcome, result.reason) == (Outcome.FAILED, "invalid_list_unsubscribe")
    assert ctl.records("smtp") == []


# -- reply codes ---------------------------------------------------------------------------------
def test_451_retries(smtp, ctl):
    ctl.add_fault(provider="smtp", status=451, reason="4.3.0 Try again later", count=1)
    result = smtp.deliver(mail())
    assert (result.outcome, result.reason, result.status) == (Outcome.RETRY, "smtp_451", 451)
    assert result.maybe_delivered is False
    assert result.raw["reply"] == "451 4.3.0 Try again later"
    assert smtp.deliver(mail()).outcome is Outcome.SENT  # the connection survived the refusal


def test_550_fails_with_the_servers_text(smtp, ctl):
    ctl.add_fault(provider="smtp", status=550, reason="5.1.1 Mailbox unavailable", count=1)
    result = smtp.deliver(mail())
    assert (result.outcome, result.reason, result.status) == (Outcome.FAILED, "smtp_550", 550)
    assert result.raw["reply"] == "550 5.1.1 Mailbox unavailable"
    assert result.raw["stage"] == "data"


def test_421_closes_and_the_next_send_reconnects(make_channel, ctl):
    channel = make_channel("smtp")
    ctl.add_fault(provider="smtp", status=421, reason="4.7.0 Closing", count=1)
    result = channel.deliver(mail())
    assert (result.outcome, result.reason, result.status) == (Outcome.RETRY, "smtp_421", 421)
    did = new_id()
    assert channel.deliver(mail(did)).outcome is Outcome.SENT
    first, second = ctl.records("smtp")
    assert first["extra"]["peer_port"] != second["extra"]["peer_port"]


@pytest.mark.parametrize("code, outcome", [(550, Outcome.FAILED), (553, Outcome.FAILED),
                                           (450, Outcome.RETRY), (452, Outcome.RETRY)])
def test_recipient_refused_by_code(smtp, code, outcome):
    # The sandbox's fault rules act on DATA; a RCPT refusal is smtplib's SMTPRecipientsRefused.
    exc = smtplib.SMTPRecipientsRefused({TO: (code, b"5.1.1 <minji@example.org>: no such user")})
    exc.smtp_stage = "rcpt"
    result = smtp.classify_error(exc)
    assert (result.outcome, result.reason, result.status) == (outcome, f"smtp_{code}", code)
    assert result.maybe_delivered is False
    assert result.raw["recipients"][TO][1].endswith("no such user")


# -- the connection ------------------------------------------------------------------------------
def test_two_sends_reuse_one_connection(make_channel, ctl):
    channel = make_channel("smtp")
    opened = count_opens(channel)
    assert channel.deliver(mail()).outcome is Outcome.SENT
    assert channel.deliver(mail()).outcome is Outcome.SENT
    assert opened == [1]
    first, second = ctl.records("smtp")
    assert first["extra"]["peer_port"] == second["extra"]["peer_port"]


def test_concurrent_sends_share_the_connection(make_channel, ctl):
    channel = make_channel("smtp")
    opened = count_opens(channel)
    results = []

    def send():
        for _ in range(5):
            results.append(channel.deliver(mail()).outcome)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [Outcome.SENT] * 20 and opened == [1]
    assert len({r["extra"]["peer_port"] for r in ctl.records("smtp")}) == 1


def test_server_closed_connection_is_reopened_and_sent_once(make_channel, ctl):
    channel = make_channel("smtp")
    opened = count_opens(channel)
    assert channel.deliver(mail()).outcome is Outcome.SENT
    # The server ends the session behind the adapter's back (as after its idle timeout).
    assert channel._conn.docmd("QUIT")[0] == 221
    did = new_id()
    result = channel.deliver(mail(did))
    assert result.outcome is Outcome.SENT and result.raw.get("reconnected") is True
    assert len(opened) == 2
    rec = only_record(ctl, "smtp", did)  # exactly once
    assert rec["extra"]["peer_port"] != ctl.records("smtp")[0]["extra"]["peer_port"]


def test_timeout_after_data_may_have_delivered(make_channel, ctl):
    channel = make_channel("smtp", timeout=0.5)
    ctl.add_fault(provider="smtp", latency_ms=1500, count=1)
    result = channel.deliver(mail())
    assert (result.outcome, result.reason, result.status) == (Outcome.RETRY, "timeout", 0)
    assert result.maybe_delivered is True
    assert channel._conn is None  # its state is unknown: dropped
    assert channel.deliver(mail()).outcome is Outcome.SENT  # on a fresh connection


def test_server_down_is_retry_not_delivered(make_channel):
    channel = make_channel("smtp", port=free_port(), timeout=2)
    result = channel.deliver(mail())
    assert (result.outcome, result.reason, result.status) == \
        (Outcome.RETRY, "transport_error", 0)
    assert result.maybe_delivered is False
    assert "ConnectionRefusedError" in result.raw["error"]


def test_wrong_password_fails_and_does_not_loop(make_channel, ctl):
    channel = make_channel("smtp", password="not-the-password")
    opened = count_opens(channel)
    result = channel.deliver(mail())
    assert (result.outcome, result.reason, result.status) == \
        (Outcome.FAILED, "smtp_auth_failed", 535)
    assert result.maybe_delivered is False and opened == [1]
    assert channel._conn is None  # nothing kept half-open
    assert ctl.records("smtp") == []


def test_ca_that_does_not_sign_the_server_never_sends(make_channel, ctl, tmp_path):
    from sandbox.certs import ensure_tls

    other_ca = ensure_tls(tmp_path / "other").ca_file  # another throw-away CA
    channel = make_channel("smtp", ca_file=str(other_ca))
    result = channel.deliver(mail())
    assert (result.outcome, result.reason) == (Outcome.RETRY, "transport_error")
    assert result.maybe_delivered is False
    assert "CERTIFICATE_VERIFY_FAILED" in result.raw["error"]
    assert ctl.records("smtp") == []


def test_implicit_tls_against_a_starttls_port_fails_cleanly(make_channel, ctl):
    result = make_channel("smtp", tls="tls").deliver(mail())
    assert (result.outcome, result.reason, result.maybe_delivered) == \
        (Outcome.RETRY, "transport_error", False)
    assert ctl.records("smtp") == []


def test_plain_smtp_is_refused_by_the_sandbox(make_channel, ctl):
    result = make_channel("smtp", tls="none", username="", password="").deliver(mail())
    assert (result.outcome, result.reason, result.status) == (Outcome.FAILED, "smtp_530", 530)
    assert ctl.records("smtp") == []


def test_server_without_starttls_gets_nothing(configs):
    received = []

    class Sink:
        async def handle_DATA(self, server, session, envelope):
            received.append(envelope)
            return "250 OK"

    port = free_port()
    server = Controller(Sink(), hostname="127.0.0.1", port=port)  # no tls_context: no STARTTLS
    server.start()
    channel = SMTPEmailChannel({**configs["smtp"], "host": "127.0.0.1", "port": port})
    try:
        result = channel.deliver(mail())
    finally:
        channel.close()
        server.stop()
    assert (result.outcome, result.reason) == (Outcome.RETRY, "smtp_starttls_unavailable")
    assert result.maybe_delivered is False and received == []


# -- configuration -------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, message", [
    ({"tls": "ssl"}, "tls must be one of"),
    ({"tls": "none"}, "plain text"),
    ({"password": ""}, "go together"),
    ({"port": "smtp"}, "port must be a number"),
    ({"from_address": "notify"}, "addr@domain"),
    ({"host": ""}, "host"),
])
def test_bad_config_is_refused_at_construction(configs, overrides, message):
    with pytest.raises(ChannelConfigurationError, match=message):
        SMTPEmailChannel({**configs["smtp"], **overrides})


def test_declarations():
    settings = {s.key: s for s in SMTPEmailChannel.settings}
    assert SMTPEmailChannel.name == "email" and SMTPEmailChannel.provider == "smtp"
    assert (settings["host"].env, settings["host"].required) == ("NOTIFY_SMTP_HOST", True)
    assert (settings["port"].env, settings["port"].default) == ("NOTIFY_SMTP_PORT", "587")
    assert (settings["tls"].env, settings["tls"].default) == ("NOTIFY_SMTP_TLS", "starttls")
    assert settings["from_address"].env == "NOTIFY_SMTP_FROM" and settings["from_address"].required
    assert settings["timeout"].env == "NOTIFY_SMTP_TIMEOUT"
    assert all(s.doc for s in SMTPEmailChannel.settings)
    assert {k: s.sandbox for k, s in settings.items()} == {
        "host": "smtp.host", "port": "smtp.port", "username": "smtp.username",
        "password": "smtp.password", "tls": "smtp.tls", "from_address": "smtp.from_address",
        "ca_file": "ca_file", "timeout": None}
    assert not SMTPEmailChannel.collapses_resends


def test_connects_lazily_with_a_verifying_context(configs):
    channel = SMTPEmailChannel(configs["smtp"])
    assert channel._conn is None  # nothing opened at construction (forked workers)
    assert channel.context.check_hostname and channel.context.verify_mode.name == "CERT_REQUIRED"
    channel.close()  # closing an unused adapter is fine
