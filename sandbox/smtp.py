"""SMTP submission server (aiosmtpd ``Controller`` on its own thread) that records every message.

Like a real submission service (RFC 6409 on port 587) it requires **STARTTLS** (RFC 3207) with
the sandbox's server certificate (signed by ``ca.pem``, see :mod:`sandbox.certs`) and then
**AUTH** PLAIN or LOGIN (RFC 4954) with the ``smtp.username`` / ``smtp.password`` of
``sandbox.json``. Everything is aiosmtpd's own behaviour (``tls_context``, ``require_starttls``,
``auth_required``, ``auth_require_tls``, ``authenticator``):

- any command but EHLO, NOOP, STARTTLS and QUIT before STARTTLS: ``530 Must issue a STARTTLS
  command first``; AUTH is only offered (EHLO) and accepted after STARTTLS;
- MAIL, RCPT or DATA before a successful AUTH: ``530 5.7.0 Authentication required``;
- a wrong username or password: ``535 5.7.8 Authentication credentials invalid``.

Refused sessions leave no record (nothing reached ``DATA``). Each ``DATA`` becomes one ``smtp``
record: ``body`` ``{"mail_from", "rcpt_tos", "subject", "text", "html"}``, ``headers`` the message
headers, ``to`` the first recipient, ``delivery_id`` the ``X-Notify-Delivery-Id`` header,
``extra`` ``{"size", "peer", "peer_port", "tls", "tls_version", "user", "message_id"}``
(``peer_port`` is the client's source port: records with the same peer and port came over one
connection; ``message_id`` the SES-style id an accepted mail's events carry: like SES's SMTP
interface the server reads the message tags of ``X-SES-MESSAGE-TAGS`` and publishes the mail's
events, :mod:`sandbox.ses_events`). Fault rules
for ``smtp`` use ``status`` as the SMTP reply code (e.g. 421, 451, 550) and ``reason`` as its text;
``latency_ms`` delays the reply.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import hmac
import ssl
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from .certs import TlsFiles
from .common import Exchange
from .ses_events import SMTP_CONTROL_HEADERS, SentMail, new_message_id, smtp_tags

#: The AUTH mechanisms the server accepts (aiosmtpd's built-in ones).
AUTH_MECHANISMS = ("LOGIN", "PLAIN")


def server_tls_context(tls: TlsFiles) -> ssl.SSLContext:
    """Server-side TLS context with the sandbox's certificate chain (no client certificates)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    return context


class Authenticator:
    """aiosmtpd ``authenticator``: one username and password, compared in constant time."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username.encode("utf-8")
        self.password = password.encode("utf-8")

    def __call__(self, server, session, envelope, mechanism: str, auth_data) -> AuthResult:
        if mechanism not in AUTH_MECHANISMS or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = (hmac.compare_digest(auth_data.login, self.username)
              & hmac.compare_digest(auth_data.password, self.password))
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


def _session_facts(session) -> dict:
    """Connection facts of an aiosmtpd session for a record's ``extra``."""
    peer = session.peer if isinstance(session.peer, tuple) else None
    ssl_object = (session.ssl or {}).get("ssl_object") if session.ssl else None
    login = getattr(session.auth_data, "login", None) if session.authenticated else None
    return {
        "peer": str(peer[0]) if peer else None,
        "peer_port": peer[1] if peer and len(peer) > 1 else None,
        "tls": session.ssl is not None,
        "tls_version": ssl_object.version() if ssl_object is not None else None,
        "user": login.decode("utf-8", "replace") if isinstance(login, bytes) else login,
    }


class RecordingHandler:
    """aiosmtpd handler: records messages into the sandbox state and applies faults."""

    def __init__(self, state) -> None:
        self.state = state

    async def handle_DATA(self, server, session, envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        headers = {k: str(v) for k, v in msg.items()}
        text = html = None
        for part in msg.walk():
            if part.is_multipart():
                continue
            ctype = part.get_content_type()
            try:
                content = part.get_content()
            except Exception:  # undecodable part: keep raw
                content = part.get_payload()
            if ctype == "text/plain" and text is None:
                text = content
            elif ctype == "text/html" and html is None:
                html = content
        rcpts = list(envelope.rcpt_tos)
        ex = Exchange("smtp", "DATA", "smtp", None, headers)
        ex.time = time.time()
        ex.body = {"mail_from": envelope.mail_from, "rcpt_tos": rcpts,
                   "subject": msg.get("subject"), "text": text, "html": html}
        ex.to = rcpts[0] if rcpts else None
        lower = {k.lower(): v for k, v in headers.items()}
        ex.delivery_id = lower.get("x-notify-delivery-id")
        ex.extra = {"size": len(raw), **_session_facts(session)}
        applied = self.state.faults.take("smtp", rcpts)
        reply = "250 2.0.0 Message accepted for delivery"
        ex.status, ex.accepted = 250, True
        if applied is not None:
            ex.extra["faults"] = applied.ids
            if applied.latency_ms:
                await asyncio.sleep(applied.latency_ms / 1000.0)
            rule = applied.error
            if rule is not None:
                text_reason = rule.reason or rule.message or "Requested action aborted"
                reply = f"{rule.status} {text_reason}"
                ex.status, ex.reason = rule.status, text_reason
                ex.accepted = bool(rule.after_accept)
                ex.extra["fault_id"] = rule.id
        ex.response = {"reply": reply}
        if ex.accepted:
            ex.extra["message_id"] = new_message_id()
            self._published(ex, envelope.mail_from, rcpts, headers)
        self.state.records.add(ex.to_record())
        return reply

    def _published(self, ex: Exchange, mail_from: str, rcpts: list[str], headers: dict[str, str]) -> None:
        """Hand an accepted mail to SES event publishing, as SES's SMTP interface does: its
        tags from ``X-SES-MESSAGE-TAGS``, which (like ``X-SES-CONFIGURATION-SET``) SES
        removes from the mail."""
        events = self.state.ses_events
        if events is None:
            return
        lower = {k.lower(): v for k, v in headers.items()}
        tags = smtp_tags(lower.get("x-ses-message-tags"))
        if lower.get("x-ses-configuration-set"):
            tags["ses:configuration-set"] = [lower["x-ses-configuration-set"]]
        kept = [(k, v) for k, v in headers.items() if k.lower() not in SMTP_CONTROL_HEADERS]
        delivery_id = (tags.get("delivery_id") or [None])[0] or ex.delivery_id
        events.accepted(SentMail(ex.extra["message_id"], "smtp", mail_from, rcpts, kept,
                                 lower.get("subject"), tags, delivery_id))


def start_smtp(state, host: str, port: int) -> Controller:
    """Start the SMTP server thread on ``host:port`` (blocks until it accepts connections).

    STARTTLS with ``state.creds.tls`` and AUTH with ``state.creds.smtp_username`` /
    ``smtp_password`` are required (module docstring)."""
    creds = state.creds
    controller = Controller(
        RecordingHandler(state), hostname=host, port=port, ready_timeout=10.0,
        data_size_limit=40 * 1024 * 1024,
        tls_context=server_tls_context(creds.tls), require_starttls=True,
        auth_required=True, auth_require_tls=True,
        authenticator=Authenticator(creds.smtp_username, creds.smtp_password))
    controller.start()
    return controller
