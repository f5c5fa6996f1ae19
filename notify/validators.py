"""Address validation: E.164 phone numbers (phonenumbers), email addresses (email-validator,
internationalised allowed), APNs device tokens, FCM registration tokens, Web Push subscriptions."""

from __future__ import annotations

import base64
import re
import zoneinfo
from urllib.parse import urlsplit

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from rest_framework import serializers

_APNS_TOKEN = re.compile(r"^[0-9a-fA-F]{64}$")
# FCM registration tokens are opaque; observed ones are ~150-180 chars of this alphabet.
_FCM_TOKEN = re.compile(r"^[A-Za-z0-9_:\-.]{32,4096}$")


def e164(value: str) -> str:
    """Return ``value`` if it is a valid phone number written in E.164 (``+`` and digits)."""
    if not re.fullmatch(r"\+[1-9]\d{1,14}", value or ""):
        raise serializers.ValidationError("phone must be in E.164 form, e.g. +821012345678")
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException as exc:
        raise serializers.ValidationError(f"not a phone number: {exc}") from None
    if not phonenumbers.is_valid_number(number):
        raise serializers.ValidationError("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def email_address(value: str) -> str:
    """Return the normalised address; internationalised (SMTPUTF8) addresses are accepted."""
    try:
        return validate_email(value, check_deliverability=False, allow_smtputf8=True).normalized
    except EmailNotValidError as exc:
        raise serializers.ValidationError(str(exc)) from None


def apns_token(value: str) -> str:
    """APNs device tokens are 32 bytes written as 64 hex characters."""
    if not _APNS_TOKEN.fullmatch(value or ""):
        raise serializers.ValidationError("APNs device token must be 64 hexadecimal characters")
    return value.lower()


def fcm_token(value: str) -> str:
    if not _FCM_TOKEN.fullmatch(value or ""):
        raise serializers.ValidationError("not an FCM registration token")
    return value


def _b64url_len(value: str, size: int, name: str) -> None:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (ValueError, TypeError):
        raise serializers.ValidationError(f"keys.{name} is not base64url") from None
    if len(raw) != size:
        raise serializers.ValidationError(f"keys.{name} must decode to {size} bytes")


def webpush_subscription(value) -> dict:
    """A PushSubscription's JSON (W3C Push API): https ``endpoint``, ``keys.p256dh`` (65-byte
    uncompressed P-256 point, RFC 8291) and ``keys.auth`` (16 bytes)."""
    if not isinstance(value, dict) or not isinstance(value.get("keys"), dict):
        raise serializers.ValidationError("subscription must be {endpoint, keys: {p256dh, auth}}")
    endpoint = value.get("endpoint")
    if not isinstance(endpoint, str) or urlsplit(endpoint).scheme != "https" or not urlsplit(endpoint).netloc:
        raise serializers.ValidationError("subscription endpoint must be an https URL")
    keys = value["keys"]
    _b64url_len(str(keys.get("p256dh", "")), 65, "p256dh")
    _b64url_len(str(keys.get("auth", "")), 16, "auth")
    return {"endpoint": endpoint, "keys": {"p256dh": keys["p256dh"], "auth": keys["auth"]}}


def timezone_name(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise serializers.ValidationError("not an IANA time zone name") from None
    return value
