"""What an Amazon SNS HTTP(S) message must be before anything acts on it.

AWS documentation (Amazon SNS Developer Guide): "Parsing message formats" (the JSON bodies of
``Notification``, ``SubscriptionConfirmation`` and ``UnsubscribeConfirmation`` POSTs, sent with
``Content-Type: text/plain`` and the header ``x-amz-sns-message-type``) and "Verifying the
signatures of Amazon SNS messages": the string to sign is ``<name>\\n<value>\\n`` for each of the
type's fields in a fixed order (a ``Notification``'s ``Subject`` only when present);
``SignatureVersion`` 1 signs it with SHA1withRSA, 2 with SHA256withRSA (PKCS #1 v1.5), the
signature base64 in ``Signature``; the key is the certificate at ``SigningCertURL``, which must
be fetched over HTTPS from SNS itself; a message of an unexpected ``TopicArn`` is refused.

No network, no Django: the caller fetches the certificate (notify.webhooks.sns_client). Every
refusal is a :class:`Refused` carrying the HTTP status and a machine-readable code.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import re
from typing import Any, Iterable, Mapping
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

#: The signed fields of each message type, in the order they are signed.
SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
#: Fields that may be absent from the string to sign (and then are left out of it).
OPTIONAL_FIELDS = frozenset({"Subject"})
#: ``SignatureVersion`` → the hash of its RSA signature.
SIGNATURE_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
#: Seconds after its ``Timestamp`` that a message is still taken: a captured message cannot be
#: replayed later than this (and the replay store remembers message ids at least this long).
MAX_AGE = 3600
#: Seconds a ``Timestamp`` may lie in the future (clocks differ).
MAX_SKEW = 300


class Refused(Exception):
    """A message that is not taken.

    Attributes:
        status: the HTTP status to answer: 400 (not an SNS message at all) or 403 (a message
            that does not prove it comes from SNS, about an allowed topic, now).
        code: machine-readable: ``invalid_json``, ``invalid_message``, ``invalid_signature``,
            ``untrusted_url``, ``stale_message``, ``unknown_topic``.
        detail: for people.
    """

    def __init__(self, status: int, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


def parse(body: bytes, type_header: str | None) -> dict[str, Any]:
    """The message of a POST body: a JSON object of a known ``Type`` with string fields.

    Args:
        body: the request body (SNS sends JSON as ``text/plain``).
        type_header: the ``x-amz-sns-message-type`` header, which must name the same type when
            present.
    Raises:
        Refused: 400 ``invalid_json`` or ``invalid_message``.
    """
    try:
        message = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Refused(400, "invalid_json", "the body is not JSON") from None
    if not isinstance(message, dict):
        raise Refused(400, "invalid_message", "an SNS message is a JSON object")
    kind = message.get("Type")
    if kind not in SIGNED_FIELDS:
        raise Refused(400, "invalid_message", f"Type must be one of {', '.join(SIGNED_FIELDS)}")
    if type_header is not None and type_header != kind:
        raise Refused(400, "invalid_message", "x-amz-sns-message-type differs from the message's Type")
    required = [name for name in (*SIGNED_FIELDS[kind], "Signature", "SignatureVersion", "SigningCertURL")
                if name not in OPTIONAL_FIELDS]
    missing = [name for name in required if not isinstance(message.get(name), str)]
    if missing or ("Subject" in message and not isinstance(message["Subject"], str)):
        raise Refused(400, "invalid_message", f"missing or not text: {', '.join(missing) or 'Subject'}")
    return message


def string_to_sign(message: Mapping[str, Any]) -> bytes:
    """The bytes SNS signed for ``message`` (a :func:`parse` result), UTF-8."""
    lines = []
    for name in SIGNED_FIELDS[message["Type"]]:
        if name in OPTIONAL_FIELDS and name not in message:
            continue
        lines.append(f"{name}\n{message[name]}\n")
    return "".join(lines).encode("utf-8")


def check_url(url: str, host_pattern: str, what: str) -> None:
    """``url`` is https on a host SNS serves from: its host (``host:port`` when it names a
    port) matches ``host_pattern`` in full, with no user info.

    Args:
        what: the field's name, for the refusal's detail.
    Raises:
        Refused: 403 ``untrusted_url``.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise Refused(403, "untrusted_url", f"{what} is not a URL") from None
    host = (parts.hostname or "") + (f":{port}" if port is not None else "")
    if parts.scheme != "https" or parts.username is not None or parts.password is not None \
            or not host or not re.fullmatch(host_pattern, host):
        raise Refused(403, "untrusted_url", f"{what} is not https on an SNS host")


def check_fresh(message: Mapping[str, Any], now: datetime.datetime) -> None:
    """The message was published at most :data:`MAX_AGE` seconds before ``now`` (aware).

    Raises:
        Refused: 403 ``stale_message`` (also for a Timestamp that does not parse).
    """
    try:
        published = datetime.datetime.fromisoformat(message["Timestamp"])
    except ValueError:
        raise Refused(403, "stale_message", "Timestamp is not an ISO 8601 time") from None
    if published.tzinfo is None:
        published = published.replace(tzinfo=datetime.timezone.utc)
    age = (now - published).total_seconds()
    if age > MAX_AGE:
        raise Refused(403, "stale_message", f"published more than {MAX_AGE} seconds ago")
    if age < -MAX_SKEW:
        raise Refused(403, "stale_message", "published in the future")


def check_topic(message: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """The message's ``TopicArn`` is one of ``allowed`` (any topic when ``allowed`` is empty).

    Raises:
        Refused: 403 ``unknown_topic``.
    """
    allowed = list(allowed)
    if allowed and message["TopicArn"] not in allowed:
        raise Refused(403, "unknown_topic", "TopicArn is not a configured topic")


def check_signature(message: Mapping[str, Any], certificate: x509.Certificate, now: datetime.datetime) -> None:
    """``Signature`` verifies with ``certificate``'s RSA key over :func:`string_to_sign`, by
    ``SignatureVersion``; the certificate is valid at ``now``.

    Raises:
        Refused: 403 ``invalid_signature``.
    """
    algorithm = SIGNATURE_HASHES.get(message["SignatureVersion"])
    if algorithm is None:
        raise Refused(403, "invalid_signature", "SignatureVersion must be 1 or 2")
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise Refused(403, "invalid_signature", "the signing certificate is not valid now")
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise Refused(403, "invalid_signature", "the signing certificate has no RSA key")
    try:
        signature = base64.b64decode(message["Signature"], validate=True)
        key.verify(signature, string_to_sign(message), padding.PKCS1v15(), algorithm())
    except (InvalidSignature, binascii.Error, ValueError):
        raise Refused(403, "invalid_signature", "the signature does not verify") from None
