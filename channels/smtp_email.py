"""Email through an SMTP submission server with the standard library's :mod:`smtplib`.

Protocol sources: RFC 5321 (SMTP; reply codes §4.2, their classes §4.2.1, ``421`` closing the
channel §3.8), RFC 6409 (message submission, port 587), RFC 3207 (STARTTLS), RFC 8314 (implicit
TLS, port 465), RFC 4954 (AUTH and its ``454`` / ``534`` / ``535`` / ``538`` replies), RFC 5322
(message format), RFC 2047 (encoded words in headers), RFC 8058 (one-click unsubscribe), and
RFC 1047 (a reply lost after the end of ``DATA`` can duplicate the message). Through Amazon
SES's SMTP interface ("Using the Amazon SES SMTP interface to send email") the message tag
header ``X-SES-MESSAGE-TAGS`` tags each mail with its delivery id, which SES's events
(:mod:`channels.ses_events`) carry back.

smtplib is synchronous, which suits the Celery prefork workers: one adapter instance per worker
process keeps **one** SMTP connection, opened on the first send (never at construction, so a
forked child never inherits its parent's socket), kept open and reused for later messages, and
re-opened when the server has closed it. A lock makes the adapter safe to share between threads
(one transaction at a time on the connection).
"""

from __future__ import annotations

import datetime
import email.policy
import email.utils
import smtplib
import socket
import ssl
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Mapping, Sequence

from .base import Message, Outcome, Result, Setting, WebhookEvent, common_settings
from .email import EmailChannel, check_header, mailbox_words
from .errors import ChannelConfigurationError, InvalidMessage
from .http import config_timeout, ssl_context
from .ses_events import parse_record, smtp_tags_header

#: ``tls`` values: STARTTLS on a plain connection (submission, port 587), implicit TLS from the
#: first byte (port 465), or no TLS at all (a relay on the same host; no AUTH then).
TLS_MODES = ("starttls", "tls", "none")
DEFAULT_PORT = 587

#: How the message is serialised: CRLF line ends, non-ASCII header text as RFC 2047 encoded
#: words (no SMTPUTF8), and non-ASCII bodies as base64 / quoted-printable (``cte_type="7bit"``)
#: so that no 8BITMIME support is needed from the server.
POLICY = email.policy.SMTP.clone(cte_type="7bit")

#: Where a transaction got to, kept on the connection during :meth:`SMTPEmailChannel.post` and
#: copied onto any exception it raises (attribute :data:`STAGE_ATTRIBUTE`):
#: ``connect`` (TCP, greeting, EHLO, STARTTLS, AUTH), ``mail`` (``MAIL FROM`` sent, not yet
#: accepted), ``rcpt`` (``MAIL FROM`` accepted, ``RCPT TO`` under way), ``data`` (``DATA`` sent:
#: from here on the server may have the message).
STAGES = ("connect", "mail", "rcpt", "data")
STAGE_ATTRIBUTE = "smtp_stage"


#: RFC 5322 §2.1.1: a line (header field included) must not exceed 998 characters.
MAX_LINE = 998


class _Verbatim(str):
    """An ASCII header value written exactly as given, on one line (or folded only between the
    given ``words``).

    The policy folds long header lines at 78 characters and turns a word longer than that into
    RFC 2047 encoded words: right for the Subject, wrong for structured values such as
    ``List-Unsubscribe: <https://...>`` (RFC 2369 / RFC 8058 allow no encoded words; a long
    one-click URL would no longer be one). EmailPolicy keeps a value that has a ``name`` and a
    ``fold`` as it is (``header_store_parse`` / ``fold``), so the extra headers of
    :meth:`~channels.email.EmailChannel.email_parts` that are ASCII go out as the caller gave
    them, like SES sends its ``Headers``.

    ``From`` with a display name goes out this way too, as :func:`channels.email.mailbox_words`
    writes it: given as a string, the policy would parse the mailbox again, decode its encoded
    words and write the display name back unquoted (CPython 3.11: ``김 "x" <y>, z`` comes out as
    ``=?utf-8?b?6rmA?= "x" <y>, z <addr>``, a second address); a long name folds between its
    encoded words, never inside one.
    """

    name: str
    words: tuple[str, ...]

    def __new__(cls, name: str, value: str | None = None,
                words: tuple[str, ...] | None = None) -> "_Verbatim":
        words = tuple(words) if words else (value or "",)
        obj = super().__new__(cls, " ".join(words))
        obj.name = name
        obj.words = words
        return obj

    def fold(self, *, policy) -> str:  # noqa: D102 - the header-object protocol of email.policy
        lines = [f"{self.name}:"]
        for index, word in enumerate(self.words):
            if index and len(lines[-1]) + 1 + len(word) > 78:
                lines.append("")  # a continuation line starts with the space added below
            lines[-1] += " " + word
        return policy.linesep.join(lines) + policy.linesep


class StartTLSUnavailable(smtplib.SMTPException):
    """The server does not offer STARTTLS although ``tls`` is ``starttls``: nothing is sent in
    plain text (a misconfigured server, or someone on the path stripping the extension)."""


class AuthUnavailable(smtplib.SMTPException):
    """A username is configured but the server offers no AUTH mechanism smtplib speaks."""


@dataclass(frozen=True)
class SMTPPayload:
    """One message ready for the wire.

    Attributes:
        mail_from: the envelope sender (``MAIL FROM``).
        rcpt_to: the one envelope recipient (``RCPT TO``).
        message_id: the ``Message-ID`` header value (with its angle brackets).
        data: the RFC 5322 message, CRLF line ends, 7-bit clean.
    """

    mail_from: str
    rcpt_to: str
    message_id: str
    data: bytes


@dataclass(frozen=True)
class SMTPAnswer:
    """What the server said to an accepted message.

    Attributes:
        code: the reply code to the end of ``DATA`` (250).
        text: that reply's text (often the server's queue id).
        message_id: the ``Message-ID`` sent.
        reconnected: the kept connection had been closed by the server and was re-opened.
    """

    code: int
    text: str
    message_id: str
    reconnected: bool = False


class _Tracking:
    """smtplib mixin: records the transaction's stage (:data:`STAGES`) and DATA's final reply."""

    stage = "connect"
    data_reply: tuple[int, bytes] | None = None

    def mail(self, sender, options=()):  # noqa: D102 - smtplib's signature
        self.stage = "mail"
        reply = super().mail(sender, options)
        if reply[0] == 250:
            self.stage = "rcpt"
        return reply

    def data(self, msg):  # noqa: D102
        self.stage = "data"
        reply = super().data(msg)
        self.data_reply = reply
        return reply


class _SMTP(_Tracking, smtplib.SMTP):
    pass


class _SMTPSSL(_Tracking, smtplib.SMTP_SSL):
    pass


def _text(value: bytes | str | None) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""


def _stage_of(exc: BaseException) -> str | None:
    return getattr(exc, STAGE_ATTRIBUTE, None)


class SMTPEmailChannel(EmailChannel):
    """Email sender over SMTP (submission with STARTTLS and AUTH by default).

    Config keys:
        host: the SMTP server (required); with TLS its certificate must name this host.
        port: its port (optional, default 587; 465 for ``tls``).
        username, password: AUTH credentials (optional as a pair; no AUTH when unset). smtplib
            picks CRAM-MD5, PLAIN or LOGIN from what the server offers; they are only ever sent
            over TLS.
        tls: ``starttls`` (default: STARTTLS is required, a server that does not offer it gets
            nothing), ``tls`` (implicit TLS) or ``none`` (plain; refused together with a
            username). Anything else: ChannelConfigurationError.
        from_address: the sender, ``addr@domain`` or ``Name <addr@domain>`` (required): the
            header ``From`` as given (unless the content has a ``from_name``: then its address
            with that display name, RFC 2047-encoded when not ASCII), the envelope
            ``MAIL FROM`` its address, the ``Message-ID`` domain its domain.
        ca_file: CA bundle the server certificate is verified against, host name checked
            (optional; the system CAs when unset).
        timeout: seconds for connect and for each reply (optional, default 10).

    Message mapping: :class:`channels.email.EmailChannel` (the channel's rules), built with
    :class:`email.message.EmailMessage` (policy :data:`POLICY`): ``From``, ``To``, ``Subject``
    (RFC 2047-encoded when not ASCII), ``Date``, ``Message-ID``
    (``<delivery id@sender's domain>``, the same on a resend), ``X-SES-MESSAGE-TAGS:
    delivery_id=<id>`` (SES's SMTP interface takes it as a message tag and removes it; other
    servers pass it on), the headers of
    :meth:`~channels.email.EmailChannel.email_parts` (``X-Notify-Delivery-Id``, RFC 8058
    ``List-Unsubscribe`` + ``List-Unsubscribe-Post``, the caller's), then ``text/plain``, or
    ``text/html``, or both as ``multipart/alternative``. Addresses must be ASCII (domains in
    punycode; no SMTPUTF8) → else FAILED ``invalid_address``; caller headers follow the
    channel's rules (:meth:`channels.email.EmailChannel.check_content`). The extra headers go out verbatim on one
    line when ASCII (a long ``List-Unsubscribe`` URL stays a URL, see :class:`_Verbatim`; one
    that does not fit a 998-character line → FAILED ``invalid_list_unsubscribe``), RFC 2047
    encoded otherwise.

    Answers (RFC 5321 §4.2.1 reply classes; ``status`` is the reply code, ``raw`` keeps the
    server's text and the stage):

    ======================================  =========================================
    ``250`` to the end of ``DATA``          SENT, ``provider_message_id`` = Message-ID
    4yz (421, 450, 451, 452, 454, …) at     RETRY, reason ``smtp_<code>`` (transient:
    any step, per-recipient 4yz included    "the action may be requested again")
    5yz (550, 552, 553, 554, 530, …) at     FAILED, reason ``smtp_<code>`` (permanent:
    any step, per-recipient 5yz included    "SHOULD NOT repeat the exact request")
    AUTH refused with 5yz (535, 534, 538)   FAILED, reason ``smtp_auth_failed``
    no usable AUTH mechanism offered        FAILED, reason ``smtp_auth_unavailable``
    STARTTLS not offered (``starttls``)     RETRY, reason ``smtp_starttls_unavailable``
    connection refused, DNS failure, TLS    RETRY, ``transport_error`` / ``timeout``,
    handshake or certificate failure,       ``maybe_delivered`` False until ``DATA`` was
    server disconnect, timeout              sent, True from then on (RFC 1047)
    ======================================  =========================================

    A reply is the server's explicit refusal, so no reply-based RETRY is ``maybe_delivered``.
    Inside one :meth:`deliver` the message is sent at most once, with one exception: when the
    *kept* connection turns out to be closed before ``MAIL FROM`` was accepted (a disconnect, or
    ``421``), it is re-opened and the message tried once more on the new one; every later
    failure is returned for the service (Celery) to retry.

    Events: when the server is Amazon SES's SMTP interface, the configuration set's SNS topic
    can be subscribed at ``/webhooks/smtp/events`` (``sns_webhook_kinds``): see
    :meth:`parse_webhook`.
    """

    provider = "smtp"
    sns_webhook_kinds = ("events",)
    settings = (
        Setting("host", "NOTIFY_SMTP_HOST", required=True, sandbox="smtp.host",
                doc="SMTP server host (the name its TLS certificate carries)"),
        Setting("port", "NOTIFY_SMTP_PORT", default=str(DEFAULT_PORT), sandbox="smtp.port",
                doc="SMTP port: 587 for STARTTLS submission, 465 for implicit TLS"),
        Setting("username", "NOTIFY_SMTP_USERNAME", sandbox="smtp.username",
                doc="AUTH username (no AUTH when unset; never sent without TLS)"),
        Setting("password", "NOTIFY_SMTP_PASSWORD", sandbox="smtp.password", secret=True,
                doc="AUTH password"),
        Setting("tls", "NOTIFY_SMTP_TLS", default="starttls", sandbox="smtp.tls",
                doc="`starttls` (STARTTLS required), `tls` (implicit TLS), `none` (no AUTH then)"),
        Setting("from_address", "NOTIFY_SMTP_FROM", required=True, sandbox="smtp.from_address",
                doc="sender: header From and envelope MAIL FROM (`addr` or `Name <addr>`)"),
        *common_settings("NOTIFY_SMTP"),
    )
    #: Exceptions meaning "no usable answer": smtplib turns a socket error while sending or
    #: reading into SMTPServerDisconnected (a timeout is unwrapped again by :meth:`post`).
    #: Not OSError as a whole: smtplib's reply exceptions derive from OSError too, and
    #: :meth:`classify_error` maps those (and any other OSError, as a transport error).
    transport_errors = (smtplib.SMTPServerDisconnected, ConnectionError, TimeoutError,
                        socket.gaierror, ssl.SSLError)
    timeout_errors = (TimeoutError,)
    # One kept connection per instance, used under a lock (smtplib is not thread-safe).
    send_concurrency = 1

    def __init__(self, config: Mapping[str, Any]):
        """Check the config (ChannelConfigurationError); connects nothing yet."""
        super().__init__(config)
        self.host = str(config["host"]).strip()
        port = config.get("port") or DEFAULT_PORT
        try:
            self.port = int(port)
        except (TypeError, ValueError):
            raise ChannelConfigurationError(f"smtp port must be a number, got {port!r}") from None
        if not 0 < self.port < 65536:
            raise ChannelConfigurationError(f"smtp port {self.port} is out of range")
        self.tls = str(config.get("tls") or "starttls").strip().lower()
        if self.tls not in TLS_MODES:
            raise ChannelConfigurationError(
                f"smtp tls must be one of {', '.join(TLS_MODES)}, got {config.get('tls')!r}")
        self.username = config.get("username") or None
        self.password = config.get("password") or None
        if bool(self.username) != bool(self.password):
            raise ChannelConfigurationError("smtp username and password go together")
        if self.username and self.tls == "none":
            raise ChannelConfigurationError(
                "smtp tls 'none' with a username would send the password in plain text")
        self.from_header = str(config["from_address"]).strip()
        _, self.mail_from = email.utils.parseaddr(self.from_header)
        try:
            check_header("From", self.from_header)
        except InvalidMessage as exc:
            raise ChannelConfigurationError(f"smtp from_address: {exc}") from exc
        if "@" not in self.mail_from or not self.mail_from.isascii():
            raise ChannelConfigurationError(
                f"smtp from_address {self.from_header!r} needs an ASCII addr@domain")
        self.msgid_domain = self.mail_from.rpartition("@")[2]
        self.timeout = config_timeout(config)
        self.context = ssl_context(config) if self.tls != "none" else None
        self._lock = threading.Lock()
        self._conn: _SMTP | _SMTPSSL | None = None
        self._local_hostname: str | None = None

    # -- steps -------------------------------------------------------------------------------
    def build_payload(self, message: Message) -> SMTPPayload:
        """Build the MIME message (see the class docstring).

        Raises:
            InvalidMessage: see :meth:`channels.email.EmailChannel.email_parts`; also
                ``invalid_address`` (not ASCII) and ``invalid_header`` (see the class docstring).
        """
        parts = self.email_parts(message)
        if not parts.to.isascii():
            raise InvalidMessage("invalid_address",
                                 "SMTP needs an ASCII address (domain in punycode; no SMTPUTF8)")
        msg = EmailMessage(policy=POLICY)
        # One Message-ID per delivery, the same on a resend: mailboxes that see it twice can
        # show the message once.
        message_id = f"<{message.delivery_id}@{self.msgid_domain}>"
        msg["From"] = (_Verbatim("From", words=mailbox_words(parts.from_name, self.mail_from))
                       if parts.from_name else self.from_header)
        msg["To"] = parts.to
        msg["Subject"] = parts.subject
        msg["Date"] = email.utils.format_datetime(datetime.datetime.now(datetime.timezone.utc))
        msg["Message-ID"] = message_id
        tags_name, tags_value = smtp_tags_header(message.delivery_id)
        msg[tags_name] = _Verbatim(tags_name, tags_value)
        for name, value in parts.headers:
            lowered = name.lower()
            if value.isascii() and len(name) + 2 + len(value) <= MAX_LINE:
                value = _Verbatim(name, value)
            elif lowered == "list-unsubscribe":
                raise InvalidMessage("invalid_list_unsubscribe",
                                     f"longer than an email header line ({MAX_LINE})")
            try:
                msg[name] = value
            except (ValueError, TypeError) as exc:
                raise InvalidMessage("invalid_header", f"{name}: {exc}") from exc
        if parts.text:
            msg.set_content(parts.text, subtype="plain", charset="utf-8")
            if parts.html:
                msg.add_alternative(parts.html, subtype="html", charset="utf-8")
        else:
            msg.set_content(parts.html or "", subtype="html", charset="utf-8")
        return SMTPPayload(mail_from=self.mail_from, rcpt_to=parts.to, message_id=message_id,
                           data=msg.as_bytes(policy=POLICY))

    def parse_webhook(self, kind: str, params: Mapping[str, Any],
                      query: Mapping[str, str]) -> Sequence[WebhookEvent]:
        """``events``: one SES event record of a mail sent through SES's SMTP interface
        (:func:`channels.ses_events.parse_record`), matched to the delivery by its
        ``delivery_id`` tag alone: SES gives the mail its own message id, so the stored
        ``Message-ID`` never comes back."""
        return parse_record(params, match_message_id=False) if kind == "events" else []

    def post(self, message: Message, payload: SMTPPayload) -> SMTPAnswer:
        """One SMTP transaction (``MAIL FROM``, ``RCPT TO``, ``DATA``) on the kept connection.

        Returns the server's reply to the accepted message. Raises smtplib's exceptions for
        refusals and socket / TLS errors for transport failures, each carrying the stage it
        happened in (:data:`STAGE_ATTRIBUTE`). Re-opens the connection and tries once more only
        when a kept connection fails before ``MAIL FROM`` was accepted (class docstring).
        """
        with self._lock:
            reused = self._conn is not None and self._conn.sock is not None
            try:
                return self._transaction(payload)
            except (smtplib.SMTPServerDisconnected, ConnectionError,
                    smtplib.SMTPSenderRefused) as exc:
                if not (reused and _stage_of(exc) == "mail") or (
                        isinstance(exc, smtplib.SMTPSenderRefused) and exc.smtp_code != 421):
                    raise
            answer = self._transaction(payload)
            return SMTPAnswer(answer.code, answer.text, answer.message_id, reconnected=True)

    def classify(self, answer: SMTPAnswer) -> Result:
        """The server accepted the message (2yz): SENT with its Message-ID."""
        raw = {"reply": f"{answer.code} {answer.text}".strip(), "message_id": answer.message_id}
        if answer.reconnected:
            raw["reconnected"] = True
        if 200 <= answer.code < 300:
            return Result(Outcome.SENT, provider_message_id=answer.message_id,
                          status=answer.code, raw=raw)
        return self._reply_result(answer.code, answer.text, "data", raw)

    def classify_error(self, exc: Exception) -> Result:
        """Map smtplib's exceptions by reply code (class docstring); other OSError as transport
        errors; anything else propagates."""
        stage = _stage_of(exc)
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            code, text = next(iter(exc.recipients.values()), (0, b""))
            return self._reply_result(code, _text(text), stage or "rcpt",
                                      {"recipients": {r: [c, _text(t)] for r, (c, t)
                                                      in exc.recipients.items()}})
        if isinstance(exc, smtplib.SMTPAuthenticationError) and 500 <= exc.smtp_code < 600:
            return Result(Outcome.FAILED, reason="smtp_auth_failed", status=exc.smtp_code,
                          raw=self._raw(exc.smtp_code, _text(exc.smtp_error), stage))
        if isinstance(exc, smtplib.SMTPResponseException):
            return self._reply_result(exc.smtp_code, _text(exc.smtp_error), stage)
        if isinstance(exc, StartTLSUnavailable):
            return Result(Outcome.RETRY, reason="smtp_starttls_unavailable",
                          raw={"error": str(exc), "stage": stage})
        if isinstance(exc, AuthUnavailable):
            return Result(Outcome.FAILED, reason="smtp_auth_unavailable",
                          raw={"error": str(exc), "stage": stage})
        if isinstance(exc, OSError):  # e.g. EHOSTUNREACH; smtplib's own are handled above
            return Result(Outcome.RETRY, reason="transport_error",
                          maybe_delivered=not self.request_unsent(exc),
                          raw={"error": f"{type(exc).__name__}: {exc}", "stage": stage})
        raise exc

    def request_unsent(self, exc: BaseException) -> bool:
        """True when the failure came before ``DATA`` was sent (connect, TLS, AUTH, ``MAIL``,
        ``RCPT``): the server cannot have the message. False from ``DATA`` on, and when the
        stage is unknown."""
        return _stage_of(exc) in ("connect", "mail", "rcpt")

    def close(self) -> None:
        """``QUIT`` and close the kept connection (worker shutdown)."""
        with self._lock:
            self._drop(quit=True)

    # -- the connection ----------------------------------------------------------------------
    def _transaction(self, payload: SMTPPayload) -> SMTPAnswer:
        """Send on the kept connection (opening it first if needed); the lock is held."""
        if self._conn is None or self._conn.sock is None:
            self._conn = None
            self._conn = self._open()
        conn = self._conn
        conn.stage, conn.data_reply = "mail", None
        try:
            conn.sendmail(payload.mail_from, [payload.rcpt_to], payload.data)
        except BaseException as exc:
            failure = exc
            if (isinstance(exc, smtplib.SMTPServerDisconnected)
                    and isinstance(exc.__context__, TimeoutError)):
                failure = exc.__context__  # smtplib wraps a read timeout; keep it a timeout
            setattr(failure, STAGE_ATTRIBUTE, conn.stage)
            # After a refusal smtplib has sent RSET (or closed on 421): the connection is fine
            # unless it is closed. After anything else its state is unknown: drop it.
            if not isinstance(exc, (smtplib.SMTPResponseException,
                                    smtplib.SMTPRecipientsRefused)) or conn.sock is None:
                self._drop()
            if failure is exc:
                raise
            raise failure from None
        code, text = conn.data_reply or (250, b"")
        return SMTPAnswer(code, _text(text), payload.message_id)

    def _open(self) -> _SMTP | _SMTPSSL:
        """Connect, EHLO, STARTTLS (verified), EHLO again, AUTH: a connection ready for
        ``MAIL FROM``. Exceptions carry the stage ``connect``."""
        if self._local_hostname is None:
            self._local_hostname = socket.getfqdn()
        conn: _SMTP | _SMTPSSL | None = None
        try:
            # connects in the constructor (SMTPConnectError unless the greeting is 220); the
            # host given here is the name TLS verifies
            if self.tls == "tls":
                conn = _SMTPSSL(self.host, self.port, local_hostname=self._local_hostname,
                                timeout=self.timeout, context=self.context)
            else:
                conn = _SMTP(self.host, self.port, local_hostname=self._local_hostname,
                             timeout=self.timeout)
            conn.ehlo_or_helo_if_needed()  # SMTPHeloError when refused
            if self.tls == "starttls":
                if not conn.has_extn("starttls"):
                    raise StartTLSUnavailable("the server does not offer STARTTLS")
                code, text = conn.starttls(context=self.context)
                if code != 220:  # smtplib returns a refused STARTTLS instead of raising
                    raise smtplib.SMTPResponseException(code, text)
                code, text = conn.ehlo()  # RFC 3207 §4.2: forget what was said before TLS
                if code != 250:
                    raise smtplib.SMTPHeloError(code, text)
            if self.username:
                if not conn.has_extn("auth"):
                    raise AuthUnavailable("the server offers no AUTH")
                try:
                    conn.login(self.username, self.password)
                except smtplib.SMTPException as exc:
                    # smtplib says "no common mechanism" with a bare SMTPException; replies
                    # (SMTPAuthenticationError) and disconnects keep their own classes
                    if type(exc) is smtplib.SMTPException:
                        raise AuthUnavailable(str(exc)) from exc
                    raise
        except BaseException as exc:
            setattr(exc, STAGE_ATTRIBUTE, "connect")
            if conn is not None:
                conn.close()
            raise
        return conn

    def _drop(self, quit: bool = False) -> None:
        """Forget the kept connection (``QUIT`` first when asked); the lock is held."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if quit and conn.sock is not None:
                conn.quit()
        except (smtplib.SMTPException, OSError):
            pass
        finally:
            conn.close()

    # -- answers -----------------------------------------------------------------------------
    @staticmethod
    def _raw(code: int, text: str, stage: str | None, extra: Mapping[str, Any] | None = None
             ) -> dict[str, Any]:
        return {"reply": f"{code} {text}".strip(), "stage": stage, **(extra or {})}

    def _reply_result(self, code: int, text: str, stage: str | None,
                      extra: Mapping[str, Any] | None = None) -> Result:
        """A reply code → Result by its RFC 5321 class (4yz RETRY, 5yz FAILED)."""
        raw = self._raw(code, text, stage, extra)
        if 500 <= code < 600:
            return Result(Outcome.FAILED, reason=f"smtp_{code}", status=code, raw=raw)
        if 400 <= code < 500:
            return Result(Outcome.RETRY, reason=f"smtp_{code}", status=code, raw=raw)
        # no valid reply class (smtplib reports some local failures with code -1)
        return Result(Outcome.RETRY, reason="smtp_error", status=max(code, 0), raw=raw,
                      maybe_delivered=stage not in ("connect", "mail", "rcpt"))
