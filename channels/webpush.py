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
import hashlib
import ipaddress
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import SplitResult, urlsplit

import requests
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid
from pywebpush import WebPusher

from .base import AddressKind, Channel, InvalidAddress, Message, Result, RetryDefaults, Setting, \
    common_settings
from .errors import ChannelConfigurationError, InvalidMessage
from .http import DEFAULT_POOL_SIZE, RequestsTransport, config_timeout, http_result, json_bytes, response_json, \
    retryless_session

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
#: Decoded sizes of a subscription's keys: the uncompressed P-256 point and the auth secret
#: (RFC 8291 §3.1, §3.2).
P256DH_BYTES = 65
AUTH_BYTES = 16
#: base64url (RFC 4648 §5), padding optional.
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")
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

    def __init__(self, private_key: bytes, subject: str,
                 ttl: int = VAPID_TTL_SECONDS, margin: int = VAPID_RESIGN_MARGIN_SECONDS,
                 key_name: str = "private key"):
        # The key's bytes, not its path: Vapid.from_file would *generate and save* a new key
        # when the file is missing, so a typo could silently create a new identity. PEM or
        # base64url DER, as Vapid.from_file reads a file.
        try:
            self.vapid = (Vapid.from_pem(private_key) if b"-----BEGIN" in private_key
                          else Vapid.from_der(private_key.strip()))
        except Exception as exc:  # noqa: BLE001 - py_vapid wraps parse errors itself
            raise ChannelConfigurationError(
                f"VAPID key {key_name}: not a P-256 private key ({type(exc).__name__})") from None
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
            (required unless ``vapid_private_key`` is set; must exist).
        vapid_private_key: the key's content instead of the file: how an app stores its own
            (secret; wins over ``vapid_private_key_file``).
        vapid_subject: ``mailto:`` or ``https:`` contact for the push services (required).
        ca_file: CA bundle to verify push services (optional).
        timeout: seconds for connect and read (optional, default 10).

    Message mapping: ``to`` is the browser's subscription ``{"endpoint", "keys": {"p256dh",
    "auth"}}``. The plaintext is JSON ``{"title", "body", "url", "data", "notify_delivery_id"}``,
    plus ``open_url`` (``Message.open_url``: the service worker POSTs to it, no body, when the
    notification is clicked) unless it would push the payload over 4096 bytes (the API checked
    the content without it, so it must never fail a send; the app can still report the open
    with ``notify_delivery_id``).
    Headers: ``TTL`` (``ttl`` or four weeks), ``Urgency`` (``high`` / ``normal``), ``Topic`` (the
    collapse key or delivery id, made URL-safe base64 ≤ 32 characters: a UUID becomes its
    32-hex form, a longer key is hashed).

    Answers: 201/200/202 → SENT (``Location`` is the id); 404/410 → DEAD_TOKEN (delete the
    subscription); 413 → FAILED; 429/5xx → RETRY with ``Retry-After``; other 4xx → FAILED. A
    stored subscription that breaks a registration rule (:func:`parse_subscription`) is
    DEAD_TOKEN before any call, reason ``invalid_address:<field>:<reason>``.
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
                sandbox="webpush.vapid_private_key_file", per_app=False, doc="VAPID P-256 private key (PEM)"),
        Setting("vapid_private_key", "NOTIFY_VAPID_PRIVATE_KEY", secret=True,
                content_of="vapid_private_key_file", doc="the VAPID key's content (PEM) instead of the file"),
        Setting("vapid_public_key", "NOTIFY_VAPID_PUBLIC_KEY", sandbox="webpush.vapid_public_key",
                doc="its public key (base64url), for browsers' `applicationServerKey`"),
        Setting("vapid_subject", "NOTIFY_VAPID_SUBJECT", required=True,
                sandbox="webpush.vapid_subject", doc="`mailto:` or `https:` contact"),
        Setting("private_endpoints", "NOTIFY_WEBPUSH_PRIVATE_ENDPOINTS", sandbox="webpush.url", per_app=False,
                doc="comma-separated `host:port` of push services on private addresses that "
                    "subscriptions may use (the sandbox's by default)"),
        *common_settings("NOTIFY_WEBPUSH"),
    )
    collapses_resends = True
    # One shared pooled requests session; each send builds its own WebPusher.
    send_concurrency = DEFAULT_POOL_SIZE
    open_reports = True

    def __init__(self, config: Mapping[str, Any]):
        super().__init__(config)
        self.timeout = config_timeout(config)
        key, key_name = self.read_file_setting("vapid_private_key_file")
        self.signer = VapidSigner(key, str(config["vapid_subject"]), key_name=key_name)
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
        """A PushSubscription's JSON (W3C Push API, ``PushSubscription.toJSON()``), checked as
        the workers will use it. Returns ``{"endpoint", "keys": {"p256dh", "auth"}}``.

        Rules (each problem an InvalidAddress with its ``field`` and ``reason``; all of them
        are reported together): see :func:`parse_subscription` for the shape, the endpoint's
        scheme and the keys. The workers POST to the endpoint, so its host must be public
        (:func:`check_public_host`: an IP literal, or every address the name resolves to now)
        unless the endpoint's ``host:port`` is in the ``private_endpoints`` setting (the
        sandbox's push service, a push service inside the deployment's network).

        Raises:
            InvalidAddress: with one entry in ``problems`` per part that is wrong.
        """
        return parse_subscription(value, private_endpoints(config.get("private_endpoints")))

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
            InvalidAddress: the subscription breaks a rule of :func:`parse_subscription` (a row
                stored before the rule was checked at registration, e.g. a p256dh key off the
                curve, which pywebpush would only refuse while encrypting, on every attempt):
                the send answers DEAD_TOKEN and the device is deactivated.
            InvalidMessage: ``payload_too_large`` (encrypted size would exceed 4096 bytes).
        """
        pusher = WebPusher(parse_subscription(message.to), requests_session=self.session)

        plaintext = _plaintext(message.content, message.delivery_id, message.open_url)
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


def _plaintext(content: Mapping[str, Any], delivery_id: str, open_url: str | None = None) -> bytes:
    """The JSON the browser's service worker receives, with ``open_url`` when it fits;
    InvalidMessage if empty or too large without it."""
    if not (content.get("title") or content.get("body") or content.get("data")):
        raise InvalidMessage("empty_content", "push content needs a title, a body or data")
    fields = {
        "title": content.get("title"),
        "body": content.get("body"),
        "url": content.get("url"),
        "data": dict(content.get("data") or {}),
        "notify_delivery_id": delivery_id,
    }
    plaintext = json_bytes(fields)
    if open_url:
        with_url = json_bytes({**fields, "open_url": open_url})
        if len(with_url) + ENCRYPTION_OVERHEAD <= MAX_ENCRYPTED_BYTES:
            plaintext = with_url
    encrypted_size = len(plaintext) + ENCRYPTION_OVERHEAD
    if encrypted_size > MAX_ENCRYPTED_BYTES:
        raise InvalidMessage("payload_too_large",
                             f"{encrypted_size} encrypted bytes > {MAX_ENCRYPTED_BYTES}")
    return plaintext


def _decoded_key(keys: Mapping[str, Any], name: str, size: int) -> bytes:
    """``keys[name]`` decoded from base64url (RFC 4648 §5; padding optional, as browsers leave
    it out), required to be ``size`` bytes.

    Raises:
        InvalidAddress: field ``keys.<name>``, reason ``required``, ``not_base64url`` or
            ``wrong_length``.
    """
    field = f"keys.{name}"
    text = keys.get(name)
    if text is None or text == "":
        raise InvalidAddress(f"{field} is required", "required", field)
    # Strict: base64's own decoder skips characters outside the alphabet and takes '+' and '/'.
    if not isinstance(text, str) or not _BASE64URL.fullmatch(text) or len(text.rstrip("=")) % 4 == 1:
        raise InvalidAddress(f"{field} must be base64url (RFC 4648 §5)", "not_base64url", field)
    raw = base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    if len(raw) != size:
        raise InvalidAddress(f"{field} must decode to {size} bytes, not {len(raw)}", "wrong_length", field)
    return raw


def _check_p256dh(keys: Mapping[str, Any]) -> None:
    """The browser's ECDH public key: an uncompressed P-256 point (65 bytes, ``0x04 || X || Y``)
    that lies on the curve (RFC 8291 §3.1; SEC 1 §2.3.4). A point off the curve makes every
    encryption fail ("Invalid EC key"), so it is refused here rather than at each send.

    Raises:
        InvalidAddress: field ``keys.p256dh``; reason as :func:`_decoded_key`, or
            ``not_uncompressed_point``, ``not_on_curve``.
    """
    raw = _decoded_key(keys, "p256dh", P256DH_BYTES)
    if raw[0] != 0x04:
        raise InvalidAddress("keys.p256dh must be an uncompressed point (first byte 0x04)",
                             "not_uncompressed_point", "keys.p256dh")
    try:
        # cryptography checks the point is on the curve (OpenSSL's EC_POINT_oct2point).
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError:
        raise InvalidAddress("keys.p256dh is not a point on the P-256 curve", "not_on_curve",
                             "keys.p256dh") from None


def parse_subscription(value: Any, allowed_private: frozenset[str] | None = None) -> dict[str, Any]:
    """Check a Web Push subscription and return it as stored: ``{"endpoint", "keys":
    {"p256dh", "auth"}}`` (other members, such as ``expirationTime``, dropped).

    Rules, each failure an InvalidAddress with its ``field`` and ``reason``:

    * the value is an object with an object ``keys`` (field ``""`` / ``keys``:
      ``not_a_subscription``);
    * ``endpoint``: an ``https`` URL with a host (``required``, ``not_https_url``);
    * ``keys.p256dh``: base64url of a 65-byte uncompressed P-256 point on the curve
      (RFC 8291 §3.1: ``required``, ``not_base64url``, ``wrong_length``,
      ``not_uncompressed_point``, ``not_on_curve``);
    * ``keys.auth``: base64url of exactly 16 bytes (RFC 8291 §3.2: ``required``,
      ``not_base64url``, ``wrong_length``);
    * with ``allowed_private`` given (registration), the endpoint's host is public
      (:func:`check_public_host`: ``private_address``, ``invalid_host``) unless its
      ``host:port`` is in that set. Without it (a send) the host is not checked again.

    Raises:
        InvalidAddress: combining every problem found (:meth:`InvalidAddress.combine`).
    """
    if not isinstance(value, Mapping):
        raise InvalidAddress("subscription must be {endpoint, keys: {p256dh, auth}}", "not_a_subscription")
    problems: list[InvalidAddress] = []
    endpoint = value.get("endpoint")
    try:
        url = _https_url(endpoint)
        if allowed_private is not None and url.netloc.lower() not in allowed_private:
            check_public_host(url.hostname or "", url.port or 443)
    except InvalidAddress as problem:
        problems.append(problem)
    keys = value.get("keys")
    if not isinstance(keys, Mapping):
        problems.append(InvalidAddress("keys must be an object {p256dh, auth}",
                                       "required" if keys is None else "not_a_subscription", "keys"))
    else:
        for check in (_check_p256dh, lambda k: _decoded_key(k, "auth", AUTH_BYTES)):
            try:
                check(keys)
            except InvalidAddress as problem:
                problems.append(problem)
    if problems:
        raise InvalidAddress.combine(problems)
    return {"endpoint": endpoint, "keys": {"p256dh": keys["p256dh"], "auth": keys["auth"]}}


def _https_url(endpoint: Any) -> SplitResult:
    """``endpoint`` split, if it is an https URL with a host and a valid port.

    Raises:
        InvalidAddress: field ``endpoint``, reason ``required`` or ``not_https_url``.
    """
    if endpoint is None or endpoint == "":
        raise InvalidAddress("endpoint is required", "required", "endpoint")
    try:
        url = urlsplit(endpoint) if isinstance(endpoint, str) else None
        usable = url is not None and url.scheme == "https" and bool(url.hostname) and url.port != 0
    except ValueError:  # an unbalanced "[" or a port that is not a number in 0-65535
        usable = False
    if not usable:
        raise InvalidAddress("endpoint must be an https URL", "not_https_url", "endpoint")
    return url


def private_endpoints(setting: str | None) -> frozenset[str]:
    """The ``host:port`` entries of the ``private_endpoints`` setting (a comma-separated list of
    ``host:port`` or URLs), lower-cased."""
    entries = (item.strip() for item in (setting or "").split(","))
    return frozenset((urlsplit(e).netloc if "://" in e else e).lower() for e in entries if e)


def public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for an address on the public Internet: not private, loopback, link-local,
    multicast, reserved, unspecified or shared (RFC 6890's special-purpose registries, as
    :mod:`ipaddress` knows them; ``is_global`` alone lets multicast through). An IPv6 address
    carrying an IPv4 one (IPv4-mapped ``::ffff:a.b.c.d``, 6to4 ``2002::/16``) counts as that."""
    if address.version == 6:
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return public_address(embedded)
    return address.is_global and not (address.is_private or address.is_loopback or address.is_link_local
                                      or address.is_multicast or address.is_reserved or address.is_unspecified)


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an IP address when it is written as one, including the IPv4 forms that
    ``inet_aton`` (and so the resolver) still reads: ``127.1``, ``2130706433``, ``0x7f.0.0.1``
    and ``0`` are all loopback."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.ip_address(socket.inet_aton(host))
    except (OSError, UnicodeError, ValueError):
        return None


def check_public_host(host: str, port: int) -> None:
    """Refuse a push-service host the workers must not be sent to (server-side request
    forgery): an IP literal that is not public (:func:`public_address`), ``localhost`` and
    ``*.localhost`` (loopback by RFC 6761 §6.3, whatever the resolver says), and a name any of
    whose current addresses (``socket.getaddrinfo``, A and AAAA) is not public.

    A name that does not resolve now reaches nothing now, and is accepted (a send to it fails
    as a transport error). This is a registration-time check: a name whose records change
    later is for egress filtering at the network layer.

    Raises:
        InvalidAddress: field ``endpoint``, reason ``private_address`` (naming the address) or
            ``invalid_host`` (not a name DNS can carry: IDNA refuses it).
    """
    host = host.lower().rstrip(".")
    literal = _ip_literal(host)
    if literal is not None:
        if not public_address(literal):
            raise InvalidAddress(f"endpoint host {literal} is not a public address", "private_address", "endpoint")
        return
    if host == "localhost" or host.endswith(".localhost"):
        raise InvalidAddress(f"endpoint host {host} is a loopback name", "private_address", "endpoint")
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError:
        raise InvalidAddress("endpoint host is not a valid domain name", "invalid_host", "endpoint") from None
    except OSError:  # socket.gaierror: no such name, or no answer now
        return
    for *_, sockaddr in answers:
        address = ipaddress.ip_address(sockaddr[0])
        if not public_address(address):
            raise InvalidAddress(f"endpoint host {host} resolves to {address}, not a public address",
                                 "private_address", "endpoint")


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
