"""Firebase Cloud Messaging, HTTP v1 API, with a service account through google-auth.

Provider documentation: "Build app server send requests" and the ``projects.messages.send`` /
``ErrorCode`` REST reference (firebase.google.com/docs/cloud-messaging, /docs/reference/fcm/rest).

Why not pyfcm's send path: ``pyfcm`` sleeps inside the worker on ``Retry-After`` and re-POSTs on
502/503 through a urllib3 ``Retry`` mounted on its session: a second, hidden retry layer behind
Celery that blocks the worker process, can resend a message the provider already accepted, and
hides the provider's answer from the delivery-attempt log. Here every send is exactly one POST and
Celery owns the retry policy.

Transport: the sends go over HTTP/2 (channels.http.Http2Client): the sends of a worker process's
threads are concurrent streams on one kept-open connection, as FCM's HTTP v1 API allows ("Send
messages" : "the HTTP v1 API supports HTTP/2 multiplexing"); a server that only speaks HTTP/1.1
gets a few pooled keep-alive connections instead.

Auth: ``google.oauth2.service_account.Credentials`` signs an OAuth2 JWT-bearer grant and caches
the access token (about an hour); before each send its ``before_request`` attaches the token,
fetching a new one shortly before expiry (over a retry-less requests session trusting the same
CA). There is no "refresh and resend on 401": on a 401 this adapter drops the cached token and
answers RETRY, so the resend is Celery's. (google-auth still retries the *token* request itself
up to 3 times on 5xx; no message is sent by that request.)
The access token of a service account is shared by every worker process through the shared token
store (channels.tokens): when google-auth wants a refresh, a token another process fetched is
adopted, and only one process at a time asks the token endpoint (google-auth still makes that
request); a token Google refused (401) is dropped for all.
"""

from __future__ import annotations

import datetime
import functools
import json
import re
import time
from typing import Any, Mapping

import google.auth.exceptions
import httpx
from google.auth.transport.requests import Request as GoogleAuthRequest
from google.oauth2 import service_account

from .base import AddressKind, Channel, InvalidAddress, Message, Outcome, Result, RetryDefaults, \
    Setting, common_settings
from .errors import ChannelConfigurationError, InvalidMessage
from .http import DEFAULT_POOL_SIZE, Http2Client, config_timeout, http_result, json_bytes, response_json, retryless_session
from .tokens import SharedToken, SharedTokenStore, TokenEntry, store_from_config

SCOPES = ("https://www.googleapis.com/auth/firebase.messaging",)
#: FCM's limit for the data + notification payload of a message to a token, in UTF-8 bytes.
MAX_PAYLOAD_BYTES = 4096
#: ``apns-collapse-id`` limit in bytes (FCM passes the header on to APNs).
MAX_APNS_COLLAPSE_ID_BYTES = 64
#: ``details[].errorCode`` values meaning the registration token is gone for good.
DEAD_TOKEN_CODES = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})
#: Data keys FCM reserves (Firebase, "Set message type": ``from``, ``notification``,
#: ``message_type``, and any key starting with ``google`` or ``gcm``; INVALID_ARGUMENT otherwise),
#: and the one this adapter adds itself.
RESERVED_DATA_KEYS = frozenset({"from", "notification", "message_type", "notify_delivery_id"})
RESERVED_DATA_PREFIXES = ("google", "gcm")
#: FCM registration tokens are opaque; observed ones are ~150-180 characters of this alphabet.
_TOKEN = re.compile(r"^[A-Za-z0-9_:\-.]{32,4096}$")
_PLACEHOLDER_ID = "00000000-0000-0000-0000-000000000000"
_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
#: Fetch a new access token this long (seconds) before the current one expires: earlier than
#: google-auth's own refresh threshold (3 min 45 s), so a token adopted from the store is one
#: google-auth considers valid.
ACCESS_TOKEN_REFRESH_MARGIN = 5 * 60


class SharedCredentials(service_account.Credentials):
    """Service account credentials whose access token is shared through a token store.

    google-auth calls :meth:`refresh` when its token is missing or near expiry; this adopts the
    token stored by another process when that one is still fresh, and otherwise lets one process
    (the holder of the store's lock) fetch it with google-auth's own refresh.
    """

    _shared: SharedToken | None = None

    def share(self, store: SharedTokenStore | None, lock_ttl: float) -> None:
        """Share this service account's access token through ``store`` (None: this instance's
        own), under the key ``fcm-token:<service account email>:<private key id>``: the key id
        too, so that a service account whose key was replaced (or two token endpoints with
        one account name, such as two provider sandboxes) never adopts a token that the other
        key's endpoint issued."""
        self._shared = SharedToken(f"fcm-token:{self.service_account_email}:{self.signer.key_id or ''}",
                                   self._fetch, store, lock_ttl=lock_ttl)
        self._fetch_request: Any = None

    @property
    def shared(self) -> SharedToken | None:
        """The shared token, once :meth:`share` was called."""
        return self._shared

    def refresh(self, request: Any) -> None:
        """Set ``token`` / ``expiry`` from the shared store, fetching a new token if due."""
        if self._shared is None:
            super().refresh(request)
            return
        self._fetch_request = request
        entry = self._shared.entry()
        self.token = entry.token
        # google-auth compares naive UTC datetimes
        self.expiry = datetime.datetime.fromtimestamp(entry.expires_at, datetime.timezone.utc) \
            .replace(tzinfo=None)

    def reject(self, token: str) -> None:
        """Google refused ``token`` (401): drop it here and from the store unless replaced."""
        if self._shared is not None:
            self._shared.reject(token)
        if self.token == token:
            # Credentials.valid is False without a token: the next request refreshes.
            self.token = None

    def _fetch(self) -> TokenEntry:
        super().refresh(self._fetch_request)  # google-auth's OAuth2 JWT-bearer grant
        now = time.time()
        expires_at = self.expiry.replace(tzinfo=datetime.timezone.utc).timestamp() \
            if self.expiry else now + 3600
        return TokenEntry(self.token, now, expires_at,
                          max(now, expires_at - ACCESS_TOKEN_REFRESH_MARGIN))


class FCMChannel(Channel):
    """FCM HTTP v1 sender (``POST {url}/v1/projects/{project_id}/messages:send``).

    Config keys:
        url: API base URL, e.g. ``https://fcm.googleapis.com`` (required).
        service_account_file: the service account JSON key; its ``token_uri`` is where access
            tokens come from (required unless ``service_account_json`` is set).
        service_account_json: the JSON key's content instead of the file: how an app stores its
            own (secret; wins over ``service_account_file``).
        project_id: the Firebase project id (required).
        ca_file: CA bundle for both the API and the token endpoint (optional).
        timeout: seconds for connect and read, also for token refreshes (optional, default 10).
        token_store, token_store_prefix: where the access token is shared with the other worker
            processes (channels.tokens; optional: without, this instance fetches its own).

    Message mapping: ``to`` is the registration token. ``content`` keys ``title``, ``body``,
    ``image`` → ``notification``; ``data`` (values that are not strings sent as their compact
    JSON text, :func:`string_value`) plus ``url`` and
    ``notify_delivery_id`` → ``data``. ``priority`` → ``android.priority`` HIGH/NORMAL and
    ``apns-priority`` 10/5; ``ttl`` → ``android.ttl`` ``"Ns"`` and ``apns-expiration``.

    Collapsing: the per-delivery key (``collapse_key`` or the delivery id) goes to
    ``android.notification.tag`` (the drawer shows one notification per tag) and to
    ``apns-collapse-id``. ``android.collapse_key`` is set only for an explicit
    ``message.collapse_key``: FCM keeps at most four distinct collapse keys per device, so a
    unique key per delivery would let FCM drop stored messages of an offline device.

    Answers (``error.status`` and ``details[].errorCode``): 200 → SENT (``name``);
    ``UNREGISTERED`` (404) / ``SENDER_ID_MISMATCH`` (403) → DEAD_TOKEN; ``INVALID_ARGUMENT``
    (400) → FAILED, but DEAD_TOKEN when the message says the registration token is not valid;
    429 ``QUOTA_EXCEEDED``, 500 ``INTERNAL``, 503 ``UNAVAILABLE`` → RETRY with ``Retry-After``;
    401 → RETRY after dropping the cached access token; ``THIRD_PARTY_AUTH_ERROR`` → FAILED.
    """

    name = "fcm"
    provider = "fcm"
    label = "Android push (FCM)"
    content_group = "push"
    address_kind = AddressKind.DEVICE_TOKEN
    platform = "android"
    retry = RetryDefaults(max_attempts=8, max_age=6 * 3600)
    settings = (
        Setting("url", "NOTIFY_FCM_URL", default="https://fcm.googleapis.com", required=True,
                sandbox="fcm.url", per_app=False,
                doc="FCM HTTP v1 base URL"),
        Setting("service_account_file", "NOTIFY_FCM_SERVICE_ACCOUNT_FILE", required=True,
                sandbox="fcm.service_account_file", per_app=False, doc="the service account's JSON key"),
        Setting("service_account_json", "NOTIFY_FCM_SERVICE_ACCOUNT_JSON", secret=True,
                content_of="service_account_file", doc="the JSON key's content instead of the file"),
        Setting("project_id", "NOTIFY_FCM_PROJECT_ID", required=True, sandbox="fcm.project_id",
                doc="the Firebase project id"),
        *common_settings("NOTIFY_FCM"),
    )
    # google-auth wraps failures of the token request in its own TransportError; that request
    # comes before the message's, so nothing was sent then.
    transport_errors = Http2Client.transport_errors + (google.auth.exceptions.TransportError,)
    timeout_errors = Http2Client.timeout_errors
    unsent_errors = Http2Client.unsent_errors + (google.auth.exceptions.TransportError,)
    collapses_resends = True
    # Concurrent streams on the one HTTP/2 connection (see the module's docstring).
    send_concurrency = DEFAULT_POOL_SIZE

    def __init__(self, config: Mapping[str, Any]):
        super().__init__(config)
        account, account_name = self.read_file_setting("service_account_file")
        try:
            info = json.loads(account)
            if not isinstance(info, dict):
                raise ValueError("not a JSON object")
            self.credentials = SharedCredentials.from_service_account_info(info, scopes=list(SCOPES))
            store = store_from_config(config)
        except ValueError as exc:
            # google-auth names missing fields; a JSON error only a position: never the content.
            raise ChannelConfigurationError(f"FCM service account {account_name}: {exc}") from None
        # The lock outlasts a token request (google-auth tries it up to 3 times).
        self.credentials.share(store, lock_ttl=3 * config_timeout(config) + 5)
        # The token endpoint gets its own retry-less session trusting the same CA.
        self._token_session = retryless_session(config, pool_size=1)
        # google-auth would wait 120 s for a token request by default: the sends' own timeout.
        self._auth_request = functools.partial(GoogleAuthRequest(self._token_session),
                                               timeout=config_timeout(config))
        # HTTP/1.1 is offered too: then each stream in flight needs a connection of its own.
        self.http = Http2Client(config, "fcm-http2", max_connections=DEFAULT_POOL_SIZE)
        self.send_url = (f"{str(config['url']).rstrip('/')}/v1/projects/"
                         f"{config['project_id']}/messages:send")

    # -- declarations ------------------------------------------------------------------------
    @classmethod
    def check_content(cls, content: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Push content must say something, use no reserved data key, and fit 4096 bytes.

        Returns:
            ``{"payload_bytes": n, "payload_limit": 4096}`` (see :func:`device_payload_size`).
        Raises:
            InvalidMessage: ``empty_content``, ``reserved_data_key``, ``invalid_data``,
                ``payload_too_large``.
        """
        _, size = _message_body(content, "token", _PLACEHOLDER_ID, "normal", None, None)
        return {"payload_bytes": size, "payload_limit": MAX_PAYLOAD_BYTES}

    @classmethod
    def validate_address(cls, value: Any, config: Mapping[str, Any]) -> str:
        """An FCM registration token: 32 to 4096 characters of its URL-safe alphabet."""
        if not isinstance(value, str) or not _TOKEN.match(value):
            raise InvalidAddress("not an FCM registration token")
        return value

    # -- steps -------------------------------------------------------------------------------
    def build_payload(self, message: Message) -> bytes:
        """Return the JSON request body as bytes.

        Raises:
            InvalidMessage: ``invalid_token`` (empty/not a string), ``collapse_id_too_long``,
                and what :meth:`check_content` raises.
        """
        token = message.to
        if not isinstance(token, str) or not token.strip():
            raise InvalidMessage("invalid_token", "FCM registration token must be a string")
        body, _ = _message_body(message.content, token, message.delivery_id, message.priority, message.ttl,
                                message.collapse_key)
        return json_bytes({"message": body})

    def post(self, message: Message, payload: bytes) -> httpx.Response:
        """One POST (a stream on the shared connection) with the access token attached, fetched
        first when missing or near expiry."""
        headers = {"Content-Type": "application/json; charset=UTF-8"}
        self.credentials.before_request(self._auth_request, "POST", self.send_url, headers)
        return self.http.request("POST", self.send_url, content=payload, headers=headers)

    def classify(self, answer: httpx.Response) -> Result:
        """Map Google's ``{"error": {"code", "status", "message", "details"}}`` to a Result."""
        status = answer.status_code
        body = response_json(answer.content)
        if 200 <= status < 300:
            name = body.get("name") if isinstance(body, dict) else None
            return http_result(status, provider_message_id=name, raw={"body": body})
        error = body.get("error", {}) if isinstance(body, dict) else {}
        error = error if isinstance(error, dict) else {}
        code = _fcm_error_code(error)
        reason = code or error.get("status") or str(status)
        dead = code in DEAD_TOKEN_CODES or _says_token_invalid(error)
        if status == 401 and code != "THIRD_PARTY_AUTH_ERROR":
            self._drop_access_token(answer.request.headers.get("Authorization", ""))
            return http_result(status, headers=answer.headers, reason=reason,
                               retry_reasons=(reason,), raw={"body": body})
        return http_result(status, headers=answer.headers, reason=reason, dead_token=dead,
                           raw={"body": body})

    def classify_error(self, exc: Exception) -> Result:
        """A token refresh the endpoint refused (``RefreshError``) → RETRY ``auth_refresh_failed``.

        The service account may be revoked or the clock skewed; every send would fail the same
        way, so this is retried (and should alert) rather than failing deliveries one by one.
        """
        if isinstance(exc, google.auth.exceptions.RefreshError):
            return Result(Outcome.RETRY, reason="auth_refresh_failed",
                          maybe_delivered=False, raw={"error": f"{type(exc).__name__}: {exc}"})
        raise exc

    def close(self) -> None:
        """Close the HTTP/2 connection and the token endpoint's session."""
        self.http.close()
        self._token_session.close()

    def _drop_access_token(self, authorization: str) -> None:
        # Only the token this request carried: another process may have replaced it already.
        scheme, _, token = authorization.partition(" ")
        self.credentials.reject(token if scheme.lower() == "bearer" and token
                                else str(self.credentials.token))


def device_payload_size(message: Mapping[str, Any]) -> int:
    """UTF-8 bytes of what one device receives: notification + data + its platform's part.

    FCM's 4096-byte limit covers "the payload data, keys and values" of a message; the
    platform blocks (``android.notification``, ``apns.payload``) travel with it, so the largest
    per-platform total is what must fit.
    """
    base = (message.get("notification"), message.get("data"))
    android = message.get("android") or {}
    apns = message.get("apns") or {}
    candidates = (base + (android.get("notification"), android.get("data")),
                  base + (apns.get("payload"),))
    return max(len(json_bytes([part for part in parts if part])) for parts in candidates)


def _message_body(content: Mapping[str, Any], token: str, delivery_id: str, priority: str,
                  ttl: int | None, collapse_key: str | None) -> tuple[dict[str, Any], int]:
    """The ``message`` object of a send request (see :meth:`FCMChannel.build_payload`) and its
    size as :func:`device_payload_size` counts it.

    Raises:
        InvalidMessage: see :meth:`FCMChannel.check_content`; ``collapse_id_too_long``.
    """
    notification = {k: content[k] for k in ("title", "body", "image") if content.get(k)}
    data = string_data(content.get("data") or {})
    if not notification and not data:
        raise InvalidMessage("empty_content", "push content needs a title, a body or data")
    if content.get("url"):
        data.setdefault("url", string_value(content["url"]))
    data["notify_delivery_id"] = delivery_id

    high = priority == "high"
    collapse = collapse_key or delivery_id
    if len(collapse.encode("utf-8")) > MAX_APNS_COLLAPSE_ID_BYTES:
        raise InvalidMessage("collapse_id_too_long",
                             f"collapse key is limited to {MAX_APNS_COLLAPSE_ID_BYTES} bytes")
    android: dict[str, Any] = {"priority": "HIGH" if high else "NORMAL"}
    apns_headers = {"apns-priority": "10" if high else "5", "apns-collapse-id": collapse}
    if ttl is not None:
        android["ttl"] = f"{int(ttl)}s"
        apns_headers["apns-expiration"] = str(int(time.time()) + int(ttl) if ttl > 0 else 0)
    if collapse_key:
        android["collapse_key"] = collapse_key
    body: dict[str, Any] = {"token": token, "data": data, "android": android,
                            "apns": {"headers": apns_headers}}
    if notification:
        body["notification"] = notification
        android["notification"] = {"tag": collapse}
    size = device_payload_size(body)
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidMessage("payload_too_large", f"{size} bytes > {MAX_PAYLOAD_BYTES}")
    return body, size


def string_value(value: Any) -> str:
    """A data value as FCM needs it: strings as they are, any other JSON value as its compact
    JSON text (``3`` → ``"3"``, ``true`` → ``"true"``, ``{"a": 1}`` → ``'{"a":1}'``): FCM's
    ``data`` map takes string values only."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def string_data(data: Mapping[str, Any]) -> dict[str, str]:
    """``data`` with every value a string (:func:`string_value`).

    Raises:
        InvalidMessage: ``reserved_data_key`` for a key FCM reserves (or ours),
            ``invalid_data`` for an empty key.
    """
    out: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(key, str) or not key:
            raise InvalidMessage("invalid_data", f"FCM data keys must be non-empty strings, got {key!r}")
        if key in RESERVED_DATA_KEYS or key.startswith(RESERVED_DATA_PREFIXES):
            raise InvalidMessage("reserved_data_key", f"FCM reserves the data key {key!r}")
        out[key] = string_value(value)
    return out


def _fcm_error_code(error: Mapping[str, Any]) -> str | None:
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and detail.get("@type") == _FCM_ERROR_TYPE:
            return detail.get("errorCode")
    return None


def _says_token_invalid(error: Mapping[str, Any]) -> bool:
    """Google documents INVALID_ARGUMENT "The registration token is not a valid FCM
    registration token" as a dead token (the app must get a new one)."""
    message = str(error.get("message", "")).lower()
    return error.get("status") == "INVALID_ARGUMENT" and "registration token" in message \
        and "not a valid" in message
