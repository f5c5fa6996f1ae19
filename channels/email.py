"""The email channel's rules, shared by every email provider (Amazon SES, SMTP).

What an email must be is the channel's, not a provider's: a subject and a text or HTML body, no
line breaks (or other line separators) in any header, the sender's display name (``from_name``)
written as RFC 5322 / RFC 2047 require, the delivery id in a header so events can be matched back,
and the RFC 8058 one-click unsubscribe headers when the service gives a URL. Each provider module
only turns the result of :meth:`EmailChannel.email_parts` into its own request.
"""

from __future__ import annotations

import email.utils
import re
from html import escape
from dataclasses import dataclass
from email.charset import Charset
from typing import Any, ClassVar, Mapping

from .base import AddressKind, Channel, Message, RetryDefaults
from .errors import InvalidMessage

#: Header carrying the delivery id (SES event records and the sandbox read it back).
DELIVERY_ID_HEADER = "X-Notify-Delivery-Id"
#: Characters that end a header line somewhere along the way: RFC 5322 forbids CR and LF in a
#: header body; everything Python's ``str.splitlines`` breaks at (VT, FF, FS, GS, RS, NEL,
#: U+2028, U+2029) is a line break to Unicode-aware mail software and to the stdlib email
#: package; NUL ends strings in C-based MTAs.
FORBIDDEN_HEADER_CHARACTERS = frozenset("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\x00")
#: RFC 5322 §2.1.1: a line must not exceed 998 characters.
MAX_SUBJECT_CHARS = 998
#: Longest sender display name (the API's limit too); quoted and escaped it still fits a line.
MAX_FROM_NAME_CHARS = 256
#: RFC 2047 §2: an encoded word is at most 75 characters; ``=?utf-8?b?`` and ``?=`` leave 63
#: for base64, which carries 45 bytes.
ENCODED_WORD_BYTES = 45
_UTF8 = Charset("utf-8")
#: RFC 5322 §3.6.8 field name: printable ASCII except the colon.
FIELD_NAME = re.compile(r"[!-9;-~]+")
#: Headers every provider writes itself (or which would add recipients or break the MIME
#: structure): a caller's ``headers`` may not set them, nor any ``Content-*``.
RESERVED_HEADERS = frozenset({
    "from", "sender", "to", "cc", "bcc", "subject", "date", "message-id", "mime-version",
    "return-path", "reply-to-all", DELIVERY_ID_HEADER.lower(), "list-unsubscribe", "list-unsubscribe-post",
    # SES reads message tags from it (SMTP interface): a caller's would tag another delivery
    "x-ses-message-tags",
})


@dataclass(frozen=True)
class EmailParts:
    """A validated email, provider-neutral.

    Attributes:
        to: one address.
        subject: the subject (no line breaks).
        text, html: the bodies; at least one is non-empty.
        headers: extra headers in order, ``(name, value)``, the delivery id and the RFC 8058 ones
            included.
        from_name: the sender's display name (no line breaks), or None for the provider's
            configured sender as it is; :func:`mailbox` writes it with an address.
    """

    to: str
    subject: str
    text: str | None
    html: str | None
    headers: tuple[tuple[str, str], ...]
    from_name: str | None = None


class EmailChannel(Channel):
    """What every email provider of the ``email`` channel shares (declarations and content).

    Message mapping: ``to`` is one address; ``content`` keys ``subject``, ``text``, optional
    ``html``, ``headers`` (name → value) and ``from_name`` (the sender's display name, put
    before the provider's configured address, RFC 2047-encoded when not ASCII).
    ``unsubscribe_url`` (an https URL) adds ``List-Unsubscribe: <url>`` and
    ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058); ``preferences_url`` a
    footer line in each body (:func:`with_preferences_footer`). ``X-Notify-Delivery-Id``
    always carries the delivery id.
    """

    name: ClassVar[str] = "email"
    label = "Email"
    content_group = "email"
    address_kind = AddressKind.EMAIL
    retry = RetryDefaults(max_attempts=8, max_age=12 * 3600)
    collapses_resends = False  # a resend after a lost answer can deliver the mail twice
    one_click_unsubscribe = True

    @classmethod
    def check_content(cls, content: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """An email needs a subject and a text or HTML body; no header may break a line.

        Raises:
            InvalidMessage: ``empty_subject``, ``subject_too_long``, ``empty_body``,
                ``invalid_header`` (CR, LF, NUL, NEL, U+2028 or U+2029 in a header name or
                value, the subject and ``from_name`` included; a ``from_name`` that is not
                text or longer than :data:`MAX_FROM_NAME_CHARS`; a header name that is not an
                RFC 5322 field name, or one of :data:`RESERVED_HEADERS` or ``Content-*``).
        """
        subject = content.get("subject")
        if not isinstance(subject, str) or not subject.strip():
            raise InvalidMessage("empty_subject", "email needs a subject")
        if len(subject) > MAX_SUBJECT_CHARS:
            raise InvalidMessage("subject_too_long", f"{len(subject)} characters > {MAX_SUBJECT_CHARS}")
        check_header("Subject", subject)
        from_name = content.get("from_name")
        if from_name is not None:
            if not isinstance(from_name, str):
                raise InvalidMessage("invalid_header", "from_name must be text")
            if len(from_name) > MAX_FROM_NAME_CHARS:
                raise InvalidMessage("invalid_header",
                                     f"from_name: {len(from_name)} characters > {MAX_FROM_NAME_CHARS}")
            check_header("From", from_name)
        if not (content.get("text") or "").strip() and not (content.get("html") or "").strip():
            raise InvalidMessage("empty_body", "email needs text or html")
        for name, value in (content.get("headers") or {}).items():
            name = str(name)
            if not FIELD_NAME.fullmatch(name) or name.lower() in RESERVED_HEADERS \
                    or name.lower().startswith("content-"):
                raise InvalidMessage("invalid_header", f"{name!r} cannot be set on an email")
            check_header(name, str(value))
        return {}

    @classmethod
    def email_parts(cls, message: Message) -> EmailParts:
        """Validate ``message`` and return its provider-neutral parts.

        Raises:
            InvalidMessage: ``invalid_address``, ``invalid_list_unsubscribe`` (not https, as
                RFC 8058 requires), and what :meth:`check_content` raises.
        """
        to = message.to
        if not isinstance(to, str) or "@" not in to or any(c in to for c in "\r\n,;<> "):
            raise InvalidMessage("invalid_address", "one plain email address expected")
        content = message.content
        cls.check_content(content)
        headers = [(str(name), str(value)) for name, value in (content.get("headers") or {}).items()]
        headers.append((DELIVERY_ID_HEADER, message.delivery_id))
        if message.unsubscribe_url:
            if not message.unsubscribe_url.startswith("https://"):
                raise InvalidMessage("invalid_list_unsubscribe",
                                     "RFC 8058 one-click unsubscribe needs an https URL")
            check_header("List-Unsubscribe", message.unsubscribe_url)
            headers.append(("List-Unsubscribe", f"<{message.unsubscribe_url}>"))
            headers.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
        text, html = content.get("text") or None, content.get("html") or None
        if message.preferences_url:
            text, html = with_preferences_footer(text, html, message.preferences_url,
                                                 message.preferences_label or message.preferences_url)
        return EmailParts(to=to, subject=content["subject"], text=text, html=html, headers=tuple(headers),
                          from_name=(content.get("from_name") or "").strip() or None)


def with_preferences_footer(text: str | None, html: str | None, url: str,
                            label: str) -> tuple[str | None, str | None]:
    """The bodies with a last line linking the recipient's preference page (``label``: the
    link's text): after a signature separator (``-- ``, RFC 3676 §4.3) in the text part, as a
    link before ``</body>`` (or at the end) of the HTML part. A part the email does not have
    stays absent."""
    if text is not None:
        text = f"{text.rstrip()}\n\n-- \n{label}: {url}\n"
    if html is not None:
        footer = (f'<p style="font-size:12px;color:#666" class="notify-preferences">'
                  f'<a href="{escape(url)}">{escape(label)}</a></p>')
        end = html.lower().rfind("</body>")
        html = f"{html[:end]}{footer}{html[end:]}" if end >= 0 else f"{html}{footer}"
    return text, html


def check_header(name: str, value: str) -> None:
    """Raise InvalidMessage ``invalid_header`` if ``value`` could end the header's line."""
    if any(c in FORBIDDEN_HEADER_CHARACTERS for c in value):
        raise InvalidMessage("invalid_header", f"{name} contains a line break or NUL")


def mailbox_words(name: str | None, address: str) -> tuple[str, ...]:
    """The words of the mailbox ``name <address>`` as RFC 5322 writes it in ASCII (joined with
    spaces by :func:`mailbox`; a header may fold between them).

    An ASCII name is written by :func:`email.utils.formataddr`: as it is, or as a quoted string
    (``\\`` and ``"`` escaped) when it has RFC 5322 specials (``"Acme, Inc." <addr>``). A name
    that is not ASCII, or that looks like an encoded word, is written as RFC 2047 UTF-8 encoded
    words of at most 75 characters each (a decoder joins adjacent encoded words with nothing
    between them, RFC 2047 §6.2); a split falls between code points, never inside one. Without a
    name: the bare address.
    """
    if not name:
        return (address,)
    if name.isascii() and "=?" not in name:
        return (email.utils.formataddr((name, address)),)
    chunks, chunk, size = [], [], 0
    for char in name:
        width = len(char.encode("utf-8"))
        if chunk and size + width > ENCODED_WORD_BYTES:
            chunks.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(char)
        size += width
    chunks.append("".join(chunk))
    return (*(_UTF8.header_encode(part) for part in chunks), f"<{address}>")


def mailbox(name: str | None, address: str) -> str:
    """``name <address>`` as one line of ASCII (see :func:`mailbox_words`), e.g.
    ``=?utf-8?b?6rmA7KeA7JqwIFN0b3JlIPCfm40=?= <noreply@example.com>`` for ``김지우 Store 🛍``."""
    return " ".join(mailbox_words(name, address))
