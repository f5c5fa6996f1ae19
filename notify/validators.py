"""Validation of what the API stores: a recipient's E.164 phone number (phonenumbers) and email
address (email-validator, internationalised domains), time zones, ids, idempotency keys and
free-form JSON. Device tokens and subscriptions are their channel's: each adapter validates its
own (channels.base.Channel.validate_address)."""

from __future__ import annotations

import re
import zoneinfo

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from rest_framework import serializers


#: Why phonenumbers finds a number impossible, as the API's machine-readable reason.
_IMPOSSIBLE = {
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: ("invalid_country_code", "no country has this calling code"),
    phonenumbers.ValidationResult.TOO_SHORT: ("too_short", "too short for a number of its country"),
    phonenumbers.ValidationResult.TOO_LONG: ("too_long", "too long for a number of its country"),
    phonenumbers.ValidationResult.INVALID_LENGTH: ("invalid_length", "no number of its country has this length"),
}


def e164(value: str) -> str:
    """Return ``value`` if it is a valid phone number written in E.164 (``+`` and digits).

    The rules, in order, each with its reason code (the error's ``reasons``): the text is ``+``
    and 2-15 digits, the first not 0 (ITU-T E.164: ``not_e164``); a country calling code
    exists (``invalid_country_code``); the length is possible for that country (``too_short``,
    ``too_long``, ``invalid_length``); the number belongs to a range the country has assigned
    (``not_valid_for_region``). The metadata is Google's libphonenumber (the ``phonenumbers``
    package), so a newly assigned range needs a package update.

    Raises:
        ValidationError: with one of the codes above.
    """
    if not re.fullmatch(r"\+[1-9]\d{1,14}", value or ""):
        raise serializers.ValidationError("phone must be in E.164 form: + and up to 15 digits, e.g. +821012345678",
                                          code="not_e164")
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise serializers.ValidationError("no country has this calling code", code="invalid_country_code") from None
    possible = phonenumbers.is_possible_number_with_reason(number)
    if possible in _IMPOSSIBLE:
        code, message = _IMPOSSIBLE[possible]
        raise serializers.ValidationError(f"not a possible phone number: {message}", code=code)
    if not phonenumbers.is_valid_number(number):
        region = phonenumbers.region_code_for_country_code(number.country_code)
        raise serializers.ValidationError(
            f"not a valid phone number for its region ({region}): no such number range is assigned",
            code="not_valid_for_region")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def email_address(value: str) -> str:
    """Return the address as Amazon SES can send to it: an internationalised domain in its
    ASCII (IDNA / punycode) form. Non-ASCII characters before the @ (SMTPUTF8) are refused,
    since SES does not support them (SES Developer Guide, "Sending email": SES does not support
    SMTPUTF8; domain names must be punycode)."""
    try:
        return validate_email(value, check_deliverability=False, allow_smtputf8=False).ascii_email
    except EmailNotValidError as exc:
        raise serializers.ValidationError(str(exc)) from None


def timezone_name(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise serializers.ValidationError("not an IANA time zone name") from None
    return value


#: A recipient tag (notify.models.Recipient.tags): a short slug.
TAG_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
#: How many tags a recipient or a broadcast segment may carry.
MAX_TAGS = 32


def tags(value: list) -> list[str]:
    """A list of recipient tags, each matching :data:`TAG_RE` (1-32 characters, lower-case),
    at most :data:`MAX_TAGS`, duplicates dropped (first kept)."""
    bad = [t for t in value if not isinstance(t, str) or not TAG_RE.fullmatch(t)]
    if bad:
        raise serializers.ValidationError(f"not a tag (lower-case letters, digits, - and _; 1-32 characters): "
                                          f"{', '.join(map(str, bad[:5]))}", code="invalid_tag")
    value = list(dict.fromkeys(value))
    if len(value) > MAX_TAGS:
        raise serializers.ValidationError(f"at most {MAX_TAGS} tags", code="too_many_tags")
    return value


# NUL cannot be stored in PostgreSQL text or jsonb, and a lone surrogate cannot be encoded as
# UTF-8 at all (psycopg, json.dumps(ensure_ascii=False).encode() and the providers all fail on it).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# C0 and C1 controls and DEL: never part of an id a product assigns, and NUL is unstorable.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_MAX_JSON_ERRORS = 20  # enough to fix a request; bounds the size of the error answer


def escaped(text: str, pattern: re.Pattern = UNSTORABLE) -> str:
    """``text`` with the characters of ``pattern`` written as ``\\uXXXX`` (an error message must
    itself be encodable, so it cannot echo a lone surrogate)."""
    return pattern.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def storable_json(value):
    """Return ``value`` (parsed JSON) if every object key and string inside it, at any depth,
    can be stored in PostgreSQL and encoded as UTF-8: no NUL (``\\u0000``) and no lone
    surrogate (``\\ud800``-``\\udfff``).

    Raises:
        ValidationError: with a detail ``{"<path>": ["..."]}`` per offending key or string, the
            path made of keys and list indexes joined by dots (``a.b.0``), e.g. ``data.a.b.0``
            once a serializer prefixes its field name.
    """
    errors: dict[str, list[str]] = {}
    # Iterative walk: the depth is bounded by the parser, but a validator should not depend on it.
    stack: list[tuple[tuple[str, ...], object]] = [((), value)]
    while stack and len(errors) < _MAX_JSON_ERRORS:
        path, item = stack.pop()
        if isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                key = str(key)
                if UNSTORABLE.search(key):
                    errors[".".join(path + (escaped(key),))] = [
                        "key contains a NUL character or a lone surrogate, which cannot be stored"]
                    continue
                stack.append((path + (key,), child))
        elif isinstance(item, list):
            stack.extend((path + (str(index),), child) for index, child in reversed(list(enumerate(item))))
        elif isinstance(item, str) and UNSTORABLE.search(item):
            errors[".".join(path) or "non_field_errors"] = [
                "contains a NUL character or a lone surrogate, which cannot be stored"]
    if errors:
        raise serializers.ValidationError(errors)
    return value


def external_id(value: str) -> str:
    """Return ``value`` if it can be a recipient's ``external_id``: 1 to 255 characters (the
    column's size), no control characters (which include NUL) and no lone surrogates."""
    if not value or len(value) > 255:
        raise serializers.ValidationError("external id must be 1 to 255 characters")
    if _CONTROL.search(value) or UNSTORABLE.search(value):
        raise serializers.ValidationError("external id must not contain control characters")
    return value


_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def idempotency_key(value: str) -> str:
    """Return an ``Idempotency-Key`` header value if it is 1 to 255 visible ASCII characters.

    WSGI hands header values over decoded as latin-1, so a UTF-8 key would arrive garbled (and
    be stored and echoed garbled): refusing non-ASCII is the only faithful answer.
    """
    if not _IDEMPOTENCY_KEY.fullmatch(value or ""):
        raise serializers.ValidationError("1 to 255 visible ASCII characters (0x21-0x7E)")
    return value
