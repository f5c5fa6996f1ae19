"""Masking of personal data and secrets in log lines: phone numbers, email addresses, device
tokens, PEM private keys and the values of fields named as secrets.

One logging filter (:class:`MaskFilter`, on every handler of ``settings.LOGGING`` and of the
Celery workers' own handlers) rewrites each record before it is formatted: the message with its
arguments, the traceback, and every extra field. What stays is enough to tell two values apart
in an investigation and not enough to contact anyone: a phone number keeps its last two digits
(``+**********78``), an email address its first character and domain (``j***@example.com``), a
token its last four characters (``***f00d``). A PEM block (a private key, inline or in a
service-account JSON) keeps only its armour lines. Extra fields named in ``SECRET_FIELDS`` or
added with :func:`add_secret_fields` (every adapter's secret settings: notify.apps) become
``***`` whatever they hold.

Imports neither Django nor the rest of notify: ``logging.config`` builds it before the app
registry exists.
"""

from __future__ import annotations

import logging
import re
from typing import Any

#: E.164 (``+`` and up to 15 digits), also URL-encoded (``%2B``) as in form bodies.
_PHONE = re.compile(r"(?:\+|%2[bB])[1-9]\d{6,14}\b")
#: An email address, also with ``@`` URL-encoded.
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
#: Device tokens: APNs' hex (64), FCM registration tokens (``<id>:APA91b…``), Web Push
#: endpoints' and keys' base64url, API keys: long runs of token characters. UUIDs (the ids
#: logs are followed by) are shorter than the threshold between their dashes.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{10,}:[A-Za-z0-9_-]{20,}|[A-Za-z0-9_-]{40,}")
#: A PEM block, also with its line breaks escaped as in JSON (``\\n``); the body is masked.
_PEM = re.compile(r"(-----BEGIN [A-Z0-9 ]+-----)(.*?)(-----END [A-Z0-9 ]+-----)", re.S)
#: Extra fields holding an address or a credential, masked whole whatever they hold.
SECRET_FIELDS = frozenset({"to", "address", "phone", "email", "token", "subscription", "endpoint", "auth", "p256dh",
                           "authorization", "password", "api_key", "sealed"})
#: Field names added at start-up (:func:`add_secret_fields`).
_added: frozenset[str] = frozenset()


def add_secret_fields(names) -> None:
    """Mask extra fields (and dict entries) with these names too, e.g. the adapters' secret
    settings (``auth_token``, ``key``): the declarations are known once the app registry is."""
    global _added
    _added = _added | {str(name).lower() for name in names}


def _secret(name) -> bool:
    name = str(name).lower()
    return name in SECRET_FIELDS or name in _added
#: Attributes every LogRecord has: not extra fields.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def _phone(match: re.Match) -> str:
    text = match.group(0)
    plus, digits = ("+", text[1:]) if text.startswith("+") else ("%2B", text[3:])
    return plus + "*" * (len(digits) - 2) + digits[-2:]


def _token(match: re.Match) -> str:
    text = match.group(0)
    # A long identifier without digits (a test's or a function's name) is no token.
    return "***" + text[-4:] if any(ch.isdigit() for ch in text) else text


def _email(match: re.Match) -> str:
    local, _, domain = re.split(r"(@|%40)", match.group(0), maxsplit=1)
    return f"{local[:1]}***@{domain}"


def mask(text: str) -> str:
    """``text`` with every PEM block, phone number, email address and token masked (see the
    module doc)."""
    text = _PEM.sub(lambda m: f"{m.group(1)}***{m.group(3)}", text)
    text = _EMAIL.sub(_email, text)
    text = _PHONE.sub(_phone, text)
    return _TOKEN.sub(_token, text)


def mask_value(value: Any) -> Any:
    """``value`` (an extra field's: text, number, list, dict) with :func:`mask` applied to every
    string in it; dict entries named as secrets (``SECRET_FIELDS``, :func:`add_secret_fields`)
    become ``"***"``."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: "***" if _secret(k) and v else mask_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_value(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return mask(str(value))


class MaskFilter(logging.Filter):
    """Rewrites a record in place so that no formatter or handler after it sees personal data;
    never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        # A dict among the arguments is masked by name before it is formatted into the message
        # (``log.info("settings %s", {"auth_token": ...})``); other arguments are left to mask().
        if isinstance(record.args, dict):
            record.args = mask_value(record.args)
        elif isinstance(record.args, tuple):
            record.args = tuple(mask_value(arg) if isinstance(arg, dict) else arg for arg in record.args)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string is still logged, masked
            message = f"{record.msg} {record.args}"
        record.msg, record.args = mask(message), None
        if record.exc_info:
            record.exc_text = mask(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = mask(record.exc_text)
        if record.stack_info:
            record.stack_info = mask(record.stack_info)
        for name, value in list(vars(record).items()):
            if name not in _STANDARD:
                setattr(record, name, "***" if _secret(name) and value else mask_value(value))
        return True
