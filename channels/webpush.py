"""Web Push (RFC 8030) with ``aes128gcm`` payload encryption (RFC 8291) and VAPID (RFC 8292).

Provider documentation: the RFCs above; pywebpush / py_vapid READMEs for the library calls.

pywebpush's ``WebPusher`` encrypts and posts; it is given one shared ``requests.Session`` (pooled,
``max_retries=0``, ``verify=ca_file``) so connections to each push service are reused. The VAPID
key is loaded once, and the ``Authorization: vapid t=<JWT>,k=<key>`` header is signed once per
push-service origin (the JWT ``aud``) and reused until shortly before its ``exp``, instead of an
ECDSA signature per message (what ``pywebpush.webpush()`` does).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

import requests
from py_vapid import Vapid
from pywebpush import WebPushException, WebPusher

from .base import AddressKind, Channel, InvalidAddress, Message, Result, RetryDefaults, Setting, \
    common_settings
from .errors import ChannelConfigurationError, InvalidMessage
from .http import RequestsTransport, config_timeout, http_result, json_bytes, require_file, \
    response_json, retryless_session

#: Push services must accept encrypted bodies up to this size (RFC 8030 §7.2).
MAX_ENCRYPTED_BYTES = 4096
#: aes128gcm framing of a single record: header (16 salt + 4 rs + 1 idlen + 65 key id),
#: 1 padding-delimiter byte and the 16-byte AEAD tag (RFC 8188 §2, RFC 8291 §4).
ENCRYPTION_OVERHEAD = 86 + 1 + 16
#: VAPID JWT lifetime (RFC 8292 allows at most 24 h) and when to re-sign before it ends.
VAPID_TTL_SECONDS = 12 * 3600
VAPID_RESIGN_MARGIN_SECONDS = 3600
#: TTL header when the message has none: four weeks, the usual push-service maximum.
DEFAULT_TTL_SECONDS = 28 * 24 * 3600
#: ``Topic`` header: at most 32 characters of the URL-safe base64 alphabet.
_TOPIC = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_PLACEHOLDER_ID = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class _Request:
    pusher: WebPusher
    data: bytes
    headers: dict[str, str]
    ttl: int


class VapidSigner:
    """Caches one VAPID ``Authorization`` header per push-service origin.

    Thread-safe. ``signed`` counts signatures (one per origin per ~11 h of sending).
    """

    def __init__(self, private_key_file: str, subject: str,
                 ttl: int = VAPID_TTL_SECONDS, margin: int = VAPID_RESIGN_MARGIN_SECONDS):
        # Vapid.from_file would *generate and save* a new key when the file is missing:
        # require_file() runs first so a typo cannot silently create a new identity.
        try:
            self.vapid = Vapid.from_file(private_key_file)
        except Exception as exc:  # noqa: BLE001 - py_vapid wraps parse errors itself
            raise ChannelConfigurationError(f"VAPID key {private_key_file!r}: {exc}") from exc
        self.subject = subject
        self.ttl = ttl
        self.margin = margin
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[str, float]] = {}
        self.signed = 0

    def header_for(self, endpoint: str) -> str:
        """The ``Authorization`` header value for ``endpoint``'s origin (``scheme://host:port``)."""
        parts = urlsplit(endpoint)
        origin = f"{parts.scheme}://{parts.netloc}"
        now = time.time()
        with self._lock:
            cached = self._cache.get(origin)
            if cached is None or cached[1] - now < self.margin:
                exp = int(now) + self.ttl
                signed = self.vapid.sign({"aud": origin, "exp": exp, "sub": self.subject})
                cached = (signed["Authorization"], exp)
                self._cache[origin] = cached
                self.signed += 1
            return cached[0]


class WebPushChannel(RequestsTransport, Channel):
    """Web Push sender: one encrypted POST to the subscription's endpoint.

    Config keys:
        vapid_private_key_file: PEM (or DER) P-256 private key of this application server
            (required; must exist).
        vapid_subject: ``mailto:`` or ``https:`` contact for the push services (required).
        ca_file: CA bundle to verify push services (optional).
        timeout: seconds for connect and read (optional, default 10).

    Message mapping: ``to`` is the browser's subscription ``{"endpoint", "keys": {"p256dh",
    "auth"}}``. The plaintext is JSON ``{"title", "body", "url", "data", "notify_delivery_id"}``.
    Headers: ``TTL`` (``ttl`` or four weeks), ``Urgency`` (``high`` / ``normal``), ``Topic`` (the
    collapse key or delivery id, made URL-safe base64 ≤ 32 characters: a UUID becomes its
    32-hex form, a longer key is hashed).

    Answers: 201/200/202 → SENT (``Location`` is the id); 404/410 → DEAD_TOKEN (delete the
    subscription); 413 → FAILED; 429/5xx → RETRY with ``Retry-After``; other 4xx → FAILED.
    """

    name = "webpush"
    provider = "webpush"
    label = "Web Push"
    content_group = "push"
    address_kind = AddressKind.SUBSCRIPTION
    platform = "web"
    retry = RetryDefaults(max_attempts=8, max_age=6 * 3600)
    settings = (
        Setting("vapid_private_key_file", "NOTIFY_VAPID_PRIVATE_KEY_FILE", required=True,
                sandbox="webpush.vapid_private_key_file", doc="VAPID P-256 private key (PEM)"),
        Setting("vapid_public_key", "NOTIFY_VAPID_PUBLIC_KEY", sandbox="webpush.vapid_public_key",
                doc="its public key (base64url), for browsers' `applicationServerKey`"),
        Setting("vapid_subject", "NOTIFY_VAPID_SUBJECT", required=True,
                sandbox="webpush.vapid_subject", doc="`mailto:` or `https:` contact"),
        Setting("private_endpoints", "NOTIFY_WEBPUSH_PRIVATE_ENDPOINTS", sandbox="webpush.url",
                doc="comma-separated `host:port` of push services on private addresses that "
                    "subscriptions may use (the sandbox's by default)"),
        *common_settings("NOTIFY_WEBPUSH"),
    )
    collapses_resends = True

    def __init__(self, config: Mapping[str, Any]):
        super().__init__(config)
        self.timeout = config_timeout(config)
        self.signer = VapidSigner(require_file(config, "vapid_private_key_file"),
                                  str(config["vapid_subject"]))
        self.session = retryless_session(config)

    # -- declarations ------------------------------------------------------------------------
    @classmethod
    def check_content(cls, content: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Push content must say something and fit 4096 bytes once encrypted.

        Returns:
            ``{"payload_bytes": n, "payload_limit": 4096}``: the encrypted size.
        Raises:
            InvalidMessage: ``empty_content``, ``payload_too_large``.
        """
        size = len(_plaintext(content, _PLACEHOLDER_ID)) + ENCRYPTION_OVERHEAD
        return {"payload_bytes": size, "payload_limit": MAX_ENCRYPTED_BYTES}

    @classmethod
    def validate_address(cls, value: Any, config: Mapping[str, Any]) -> dict[str, Any]:
        """A PushSubscription's JSON (W3C Push API): an https ``endpoint`` on a public push
        service, ``keys.p256dh`` (65-byte uncompressed P-256 point, RFC 8291) and ``keys.auth``
        (16 bytes). Returns ``{"endpoint", "keys": {"p256dh", "auth"}}``.

        The workers POST to subscription endpoints, so an endpoint on a loopback, private,
        link-local or reserved address (or ``localhost``) is refused unless its ``host:port``
        is in the ``private_endpoints`` setting. Host names are not resolved here; egress
        filtering at the network layer covers names that resolve inward.

        Raises:
            InvalidAddress: naming the part that is wrong.
        """
        if not isinstance(value, Mapping) or not isinstance(value.get("keys"), Mapping):
            raise InvalidAddress("subscription must be {endpoint, keys: {p256dh, auth}}")
        endpoint = value.get("endpoint")
        url = urlsplit(endpoint) if isinstance(endpoint, str) else None
        if url is None or url.scheme != "https" or not url.netloc:
            raise InvalidAddress("subscription endpoint must be an https URL")
        if not _public_host(url.hostname or "") and \
                url.netloc.lower() not in private_endpoints(config.get("private_endpoints")):
            raise InvalidAddress("subscription endpoint must be a public push service")
        keys = value["keys"]
        for name, size in (("p256dh", 65), ("auth", 16)):
            if not isinstance(keys.get(name), str):
                raise InvalidAddress(f"keys.{name} must be a base64url string")
            try:
                raw = base64.urlsafe_b64decode(keys[name] + "=" * (-len(keys[name]) % 4))
            except (ValueError, binascii.Error):
                raise InvalidAddress(f"keys.{name} is not base64url") from None
            if len(raw) != size:
                raise InvalidAddress(f"keys.{name} must decode to {size} bytes")
        return {"endpoint": endpoint, "keys": {"p256dh": keys["p256dh"], "auth": keys["auth"]}}

    @classmethod
    def breaker_scope(cls, to: Any) -> str:
        """One breaker per push service (endpoint origin): browsers use many, and one that is
        down must not hold back the others."""
        endpoint = to.get("endpoint", "") if isinstance(to, Mapping) else str(to)
        url = urlsplit(endpoint)
        return f"{cls.provider}:{url.scheme}://{url.netloc}"

    # -- steps -------------------------------------------------------------------------------
    def build_payload(self, message: Message) -> _Request:
        """Validate the subscription, build the plaintext and headers.

        Raises:
            InvalidMessage: ``invalid_subscription`` (no https endpoint or bad keys),
                ``payload_too_large`` (encrypted size would exceed 4096 bytes).
        """
        subscription = message.to
        endpoint = subscription.get("endpoint") if isinstance(subscription, Mapping) else None
        if not isinstance(endpoint, str) or urlsplit(endpoint).scheme != "https":
            raise InvalidMessage("invalid_subscription", "subscription needs an https endpoint")
        try:
            pusher = WebPusher(subscription, requests_session=self.session)
        except (WebPushException, ValueError, TypeError, IndexError) as exc:
            raise InvalidMessage("invalid_subscription", str(exc)) from exc
        if not pusher.receiver_key or not pusher.auth_key or len(pusher.receiver_key) != 65 \
                or len(pusher.auth_key) != 16:
            raise InvalidMessage("invalid_subscription", "p256dh / auth keys are malformed")

        plaintext = _plaintext(message.content, message.delivery_id)
        headers = {
            "Urgency": "high" if message.priority == "high" else "normal",
            "Topic": topic_for(message.collapse_key or message.delivery_id),
        }
        ttl = DEFAULT_TTL_SECONDS if message.ttl is None else int(message.ttl)
        return _Request(pusher, plaintext, headers, ttl)

    def post(self, message: Message, payload: _Request) -> requests.Response:
        """Encrypt (``aes128gcm``) and POST once, with the cached VAPID header for the origin."""
        headers = {**payload.headers,
                   "Authorization": self.signer.header_for(payload.pusher.subscription_info[
                       "endpoint"])}
        return payload.pusher.send(payload.data, headers=headers, ttl=payload.ttl,
                                   content_encoding="aes128gcm", timeout=self.timeout)

    def classify(self, answer: requests.Response) -> Result:
        """Map the push service's status to a Result (the body is informational only)."""
        status = answer.status_code
        location = answer.headers.get("Location")
        return http_result(status, headers=answer.headers, reason=None if status < 300
                           else (answer.reason or str(status)),
                           provider_message_id=location, dead_token=status in (404, 410),
                           raw={"status": status, "location": location,
                                "body": response_json(answer.content)})

    def close(self) -> None:
        """Close the pooled session."""
        self.session.close()


def _plaintext(content: Mapping[str, Any], delivery_id: str) -> bytes:
    """The JSON the browser's service worker receives; InvalidMessage if empty or too large."""
    if not (content.get("title") or content.get("body") or content.get("data")):
        raise InvalidMessage("empty_content", "push content needs a title, a body or data")
    plaintext = json_bytes({
        "title": content.get("title"),
        "body": content.get("body"),
        "url": content.get("url"),
        "data": dict(content.get("data") or {}),
        "notify_delivery_id": delivery_id,
    })
    encrypted_size = len(plaintext) + ENCRYPTION_OVERHEAD
    if encrypted_size > MAX_ENCRYPTED_BYTES:
        raise InvalidMessage("payload_too_large",
                             f"{encrypted_size} encrypted bytes > {MAX_ENCRYPTED_BYTES}")
    return plaintext


def private_endpoints(setting: str | None) -> frozenset[str]:
    """The ``host:port`` entries of the ``private_endpoints`` setting (a comma-separated list of
    ``host:port`` or URLs), lower-cased."""
    entries = (item.strip() for item in (setting or "").split(","))
    return frozenset((urlsplit(e).netloc if "://" in e else e).lower() for e in entries if e)


def _public_host(host: str) -> bool:
    """True unless ``host`` is ``localhost`` or an IP address that is not global. IPv4 written
    the way ``inet_aton`` (and so the resolver) still reads it counts as that address:
    ``127.1``, ``2130706433``, ``0x7f.0.0.1`` and ``0`` are all loopback."""
    host = host.lower().rstrip(".")
    try:
        return ipaddress.ip_address(host).is_global
    except ValueError:
        pass
    try:
        return ipaddress.ip_address(socket.inet_aton(host)).is_global
    except OSError:
        return host != "localhost" and not host.endswith(".localhost")


def topic_for(key: str) -> str:
    """A Web Push ``Topic`` (≤ 32 URL-safe base64 characters) for a collapse key.

    A UUID gives its 32 hex digits; a key already in the alphabet and short enough is used as
    is; anything else is the first 32 characters of its SHA-256 in URL-safe base64.
    """
    try:
        return uuid.UUID(key).hex
    except (ValueError, TypeError, AttributeError):
        pass
    if _TOPIC.match(key):
        return key
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:32]
