"""Apple Push Notification service (APNs) over HTTP/2 with token (JWT) authentication.

Provider documentation: "Sending notification requests to APNs", "Establishing a token-based
connection to APNs" and "Handling notification responses from APNs" (developer.apple.com).

One HTTP/2 client (channels.http.Http2Client, HTTP/2 only, as Apple requires) lives for the whole
worker process; every send is a new stream on the same kept-open TLS connection, and sends from
several threads of the process are concurrent streams on it (Apple: "you can send multiple
notifications concurrently over one connection"). The provider token is signed
once per key and reused by every worker process through the shared token store
(channels.tokens): Apple rejects tokens older than one hour and answers
``TooManyProviderTokenUpdates`` when a key's token changes more often than every 20 minutes.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Mapping

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .base import AddressKind, Channel, InvalidAddress, Message, Result, RetryDefaults, Setting, \
    common_settings
from .errors import ChannelConfigurationError, InvalidMessage
from .http import DEFAULT_POOL_SIZE, Http2Client, http_result, json_bytes, response_json
from .tokens import SharedToken, SharedTokenStore, TokenEntry, store_from_config

#: APNs refuses payloads above this many UTF-8 bytes (regular, non-VoIP notifications).
MAX_PAYLOAD_BYTES = 4096
#: ``apns-collapse-id`` limit in bytes.
MAX_COLLAPSE_ID_BYTES = 64
#: Re-sign the provider token after this many seconds: within Apple's 20–60 min window.
TOKEN_REFRESH_SECONDS = 30 * 60
#: Apple rejects provider tokens whose ``iat`` is older than this (seconds).
TOKEN_MAX_AGE = 60 * 60
#: Reason codes meaning the device token is gone for this app (stop sending to it).
DEAD_TOKEN_REASONS = frozenset({"Unregistered", "BadDeviceToken", "DeviceTokenNotForTopic"})
#: Reason codes meaning our provider token is stale: re-sign, then retry.
TOKEN_EXPIRED_REASONS = frozenset({"ExpiredProviderToken"})


@dataclass(frozen=True)
class _Answer:
    response: httpx.Response
    token: str  # the JWT this request carried, so only that one is expired on 403


_DEVICE_TOKEN = re.compile(r"^[0-9a-fA-F]{64}$")
_ALERT_KEYS = ("title", "body", "badge", "sound")
#: Keys of the payload's root that ``data`` must not overwrite (Apple's ``aps``, and ours).
RESERVED_DATA_KEYS = frozenset({"aps", "notify_delivery_id"})
#: A delivery id has this shape; content checks made before a delivery exists use it.
_PLACEHOLDER_ID = "00000000-0000-0000-0000-000000000000"


class ProviderToken:
    """The ES256 provider JWT of one key id and team: one token per key for every process that
    shares ``store`` (channels.tokens), re-signed once it is ``max_age`` seconds old (Apple: no
    sooner than 20 minutes, no later than 60) or when Apple rejected it as expired.

    Thread-safe. ``signed`` counts the signatures this instance made (metrics and tests: it
    should stay at 1 for half an hour of sends, and at 0 in a process that found the key's token
    in the store).

    Args:
        key: the ``.p8`` key's PEM bytes; ``key_name`` says where it came from in errors (never
            its content).

    Raises:
        ChannelConfigurationError: ``key`` holds no EC private key.
    """

    def __init__(self, key: bytes, key_id: str, team_id: str,
                 max_age: float = TOKEN_REFRESH_SECONDS, store: SharedTokenStore | None = None,
                 key_name: str = "key"):
        try:
            # Parsed once, at construction: a bad key fails the worker start, not a send.
            self._key = serialization.load_pem_private_key(key, password=None)
        except (ValueError, TypeError) as exc:
            raise ChannelConfigurationError(f"APNs {key_name}: not a PEM private key ({type(exc).__name__})") from None
        if not isinstance(self._key, ec.EllipticCurvePrivateKey):
            raise ChannelConfigurationError(f"APNs {key_name} is not an EC key")
        self._key_id = key_id
        self._team_id = team_id
        self.max_age = max_age
        #: the store key: Apple counts tokens per key id (and its team)
        self.store_key = f"apns-token:{team_id}:{key_id}"
        # Signing takes milliseconds: a short lock, so a holder that died blocks no one long.
        # serve_stale off: while one process re-signs, the others wait the milliseconds it takes
        # rather than send with the old token after the new one (Apple would see a change back).
        self._shared = SharedToken(self.store_key, self._sign, store, lock_ttl=5.0,
                                   serve_stale=False)

    @property
    def signed(self) -> int:
        """How many tokens this instance signed."""
        return self._shared.minted

    @property
    def store(self) -> SharedTokenStore:
        """Where the key's token is shared."""
        return self._shared.store

    def get(self) -> str:
        """The key's current token, signing a new one if none exists or it is ``max_age`` old
        (one process signs; the others adopt it)."""
        return self._shared.get()

    def expire(self, token: str) -> None:
        """Apple said ``token`` expired: drop it, unless it was already replaced (then the
        replacement is used and nothing new is signed)."""
        self._shared.reject(token)

    def _sign(self) -> TokenEntry:
        now = int(time.time())
        token = jwt.encode({"iss": self._team_id, "iat": now}, self._key,
                           algorithm="ES256", headers={"kid": self._key_id})
        return TokenEntry(token, now, now + TOKEN_MAX_AGE, now + self.max_age)


class APNsChannel(Channel):
    """APNs sender (``POST {url}/3/device/{token}`` over HTTP/2, token auth).

    Config keys:
        url: APNs base URL, e.g. ``https://api.push.apple.com`` (required).
        key_file: path to the ``AuthKey_<KEYID>.p8`` ES256 private key (required unless
            ``key`` is set).
        key: the ``.p8`` key's content (PEM) instead of the file: how an app stores its own
            (secret; wins over ``key_file``).
        key_id: the key's 10-character id, JWT header ``kid`` (required).
        team_id: the 10-character team id, JWT claim ``iss`` (required).
        topic: the app's bundle id, ``apns-topic`` (required).
        ca_file: CA bundle to verify the server (optional; the system CAs otherwise).
        timeout: seconds for connect/read/write/pool wait (optional, default 10).
        token_store, token_store_prefix: where the provider token is shared with the other
            worker processes (channels.tokens; optional: without, this instance signs its own).

    Message mapping: ``to`` is the 64-hex device token. ``content`` keys ``title``, ``body``,
    ``badge``, ``sound``, ``image`` (sets ``mutable-content`` so a notification service
    extension can fetch it), ``url`` and ``data`` (merged at the payload root). Without
    title/body/badge/sound the push is a ``background`` push (``content-available``, priority 5).
    ``ttl`` None leaves ``apns-expiration`` out (Apple's default storage); 0 means "now or never".

    Answers: 200 → SENT (``apns-id``); 410 / ``BadDeviceToken`` / ``DeviceTokenNotForTopic`` →
    DEAD_TOKEN; 403 ``ExpiredProviderToken`` → that token is replaced (once for all
    processes), RETRY; 429 / 5xx → RETRY
    (``Retry-After``); any other 4xx → FAILED with Apple's reason (e.g. ``InvalidProviderToken``
    means the key/team config is wrong and every send will fail until fixed).
    """

    name = "apns"
    provider = "apns"
    label = "iOS push (APNs)"
    content_group = "push"
    address_kind = AddressKind.DEVICE_TOKEN
    platform = "ios"
    retry = RetryDefaults(max_attempts=8, max_age=6 * 3600)
    settings = (
        Setting("url", "NOTIFY_APNS_URL", default="https://api.push.apple.com", required=True,
                sandbox="apns.url",
                doc="`https://api.push.apple.com` or `https://api.sandbox.push.apple.com`"),
        Setting("key_file", "NOTIFY_APNS_KEY_FILE", required=True, sandbox="apns.key_file",
                per_app=False, doc="the `.p8` token-signing key"),
        Setting("key", "NOTIFY_APNS_KEY", secret=True, content_of="key_file",
                doc="the `.p8` key's content (PEM) instead of the file"),
        Setting("key_id", "NOTIFY_APNS_KEY_ID", required=True, sandbox="apns.key_id",
                doc="the key's 10-character id"),
        Setting("team_id", "NOTIFY_APNS_TEAM_ID", required=True, sandbox="apns.team_id",
                doc="the Apple developer team id"),
        Setting("topic", "NOTIFY_APNS_TOPIC", required=True, sandbox="apns.topic",
                doc="the app's bundle id (`apns-topic`)"),
        *common_settings("NOTIFY_APNS"),
    )
    transport_errors = Http2Client.transport_errors
    timeout_errors = Http2Client.timeout_errors
    unsent_errors = Http2Client.unsent_errors
    collapses_resends = True
    # Concurrent streams on the one connection (see the module's docstring).
    send_concurrency = DEFAULT_POOL_SIZE

    def __init__(self, config: Mapping[str, Any]):
        super().__init__(config)
        self.topic = config["topic"]
        try:
            store = store_from_config(config)
        except ValueError as exc:
            raise ChannelConfigurationError(f"APNs: {exc}") from exc
        key, key_name = self.read_file_setting("key_file")
        self.token = ProviderToken(key, config["key_id"], config["team_id"], store=store,
                                   key_name=key_name)
        # http1=False: Apple only speaks HTTP/2; ALPN then offers h2 alone.
        self.http = Http2Client(config, "apns-http2", http1=False, base_url=str(config["url"]).rstrip("/"))
        self.client = self.http.client

    # -- declarations ------------------------------------------------------------------------
    @classmethod
    def check_content(cls, content: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Push content must say something and its payload must fit 4096 UTF-8 bytes.

        Returns:
            ``{"payload_bytes": n, "payload_limit": 4096}``: the notification's size as sent.
        Raises:
            InvalidMessage: ``empty_content``, ``reserved_data_key`` (``aps`` or
                ``notify_delivery_id`` in ``data``), ``payload_too_large``.
        """
        body, _ = _payload_body(content, _PLACEHOLDER_ID)
        return {"payload_bytes": len(body), "payload_limit": MAX_PAYLOAD_BYTES}

    @classmethod
    def validate_address(cls, value: Any, config: Mapping[str, Any]) -> str:
        """APNs device tokens are 32 bytes written as 64 hex characters (stored lower-case)."""
        if not isinstance(value, str) or not _DEVICE_TOKEN.match(value):
            raise InvalidAddress("APNs device token must be 64 hexadecimal characters")
        return value.lower()

    # -- steps -------------------------------------------------------------------------------
    def build_payload(self, message: Message) -> tuple[bytes, dict[str, str]]:
        """Return ``(body_bytes, headers)`` without ``authorization`` (added per send).

        Raises:
            InvalidMessage: ``invalid_token`` (not 64 hex), ``collapse_id_too_long`` (> 64
                bytes), and what :meth:`check_content` raises.
        """
        token = message.to
        if not isinstance(token, str) or not _DEVICE_TOKEN.match(token):
            raise InvalidMessage("invalid_token", "APNs device tokens are 64 hex characters")
        body, background = _payload_body(message.content, message.delivery_id)

        collapse_id = message.collapse_key or message.delivery_id
        if len(collapse_id.encode("utf-8")) > MAX_COLLAPSE_ID_BYTES:
            raise InvalidMessage("collapse_id_too_long",
                                 f"apns-collapse-id is limited to {MAX_COLLAPSE_ID_BYTES} bytes")
        priority = "5" if background or message.priority != "high" else "10"
        headers = {
            "apns-topic": self.topic,
            "apns-push-type": "background" if background else "alert",
            "apns-priority": priority,
            "apns-collapse-id": collapse_id,
            "content-type": "application/json",
        }
        if message.ttl is not None:
            headers["apns-expiration"] = str(int(time.time()) + message.ttl if message.ttl > 0
                                             else 0)
        apns_id = _canonical_uuid(message.delivery_id)
        if apns_id:  # Apple answers 400 BadMessageId for anything but a UUID: let it pick one
            headers["apns-id"] = apns_id
        return body, headers

    def post(self, message: Message, payload: tuple[bytes, dict[str, str]]) -> _Answer:
        """One HTTP/2 request (a new stream on the shared connection), made on the client's loop
        while this thread waits; any status returns, httpx's errors are raised here."""
        body, headers = payload
        token = self.token.get()
        response = self.http.request("POST", f"/3/device/{message.to}", content=body,
                                     headers={**headers, "authorization": f"bearer {token}"})
        return _Answer(response, token)

    def classify(self, answer: _Answer) -> Result:
        """Map Apple's status and ``{"reason", "timestamp"}`` body to a Result."""
        response = answer.response
        status = response.status_code
        body = response_json(response.content) if status != 200 else None
        reason = body.get("reason") if isinstance(body, dict) else None
        if reason in TOKEN_EXPIRED_REASONS:
            self.token.expire(answer.token)
        apns_id = response.headers.get("apns-id")
        dead = status == 410 or (status == 400 and reason in DEAD_TOKEN_REASONS)
        return http_result(status, headers=response.headers, reason=reason,
                           provider_message_id=apns_id, dead_token=dead,
                           retry_reasons=TOKEN_EXPIRED_REASONS,
                           raw={"status": status, "apns-id": apns_id, "body": body,
                                "http_version": response.http_version})

    def close(self) -> None:
        """Close the HTTP/2 connection and stop the loop's thread."""
        self.http.close()


def _payload_body(content: Mapping[str, Any], delivery_id: str) -> tuple[bytes, bool]:
    """The notification's JSON body as sent, and whether it is a background push.

    Raises:
        InvalidMessage: see :meth:`APNsChannel.check_content`.
    """
    data = content.get("data") or {}
    if not any(content.get(k) for k in _ALERT_KEYS) and not data:
        raise InvalidMessage("empty_content", "push content needs a title, a body, a badge, "
                                              "a sound or data")
    reserved = sorted(RESERVED_DATA_KEYS.intersection(data))
    if reserved:
        raise InvalidMessage("reserved_data_key", f"APNs reserves the data key {reserved[0]!r}")
    alert = {k: content[k] for k in ("title", "body") if content.get(k)}
    background = not any(content.get(k) for k in _ALERT_KEYS)
    aps: dict[str, Any] = {}
    if alert:
        aps["alert"] = alert
    for key in ("badge", "sound"):
        if content.get(key) is not None:
            aps[key] = content[key]
    if background:
        aps["content-available"] = 1
    elif content.get("image") or content.get("mutable_content"):
        aps["mutable-content"] = 1
    payload: dict[str, Any] = dict(data)
    for key in ("url", "image"):
        if content.get(key):
            payload[key] = content[key]
    payload["aps"] = aps
    payload["notify_delivery_id"] = delivery_id
    body = json_bytes(payload)
    if len(body) > MAX_PAYLOAD_BYTES:
        raise InvalidMessage("payload_too_large", f"{len(body)} bytes > {MAX_PAYLOAD_BYTES}")
    return body, background


def _canonical_uuid(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        return None

