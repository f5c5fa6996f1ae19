"""APNs provider API emulator (HTTP/2 over TLS, token-based auth).

Rules from Apple's "Sending notification requests to APNs" and "Handling notification responses
from APNs" (developer.apple.com/documentation/usernotifications):

- ``POST /3/device/<token>`` only (405 ``MethodNotAllowed``, 404 ``BadPath``, 400
  ``MissingDeviceToken``); HTTP/2 only: an HTTP/1.1 request gets 505 (Apple closes such
  connections; the sandbox answers so that the mistake is visible).
- ``authorization: bearer <JWT>``: ES256, header ``kid`` = a key id the sandbox knows (its own,
  or one registered with ``POST /apns/keys``: sandbox.accounts), signed by that key, claims
  ``iss`` = that key's team id and ``iat``. Missing → 403 ``MissingProviderToken``; bad
  signature / kid / iss / alg → 403 ``InvalidProviderToken``; ``iat`` older than 3600 s → 403
  ``ExpiredProviderToken``. The record's ``extra`` names the key (``key_id``, ``team_id``).
- every distinct provider token is recorded per key (sandbox.provider_tokens); in strict mode a
  key whose token changes within 20 minutes gets 429 ``TooManyProviderTokenUpdates``.
- ``apns-topic`` = the key's bundle id (+ ``.voip``, ``.complication``, … for those push types):
  missing → 400 ``MissingTopic``, other → 400 ``TopicDisallowed``.
- ``apns-push-type`` in the documented set (400 ``InvalidPushType``); ``apns-priority`` 10/5/1,
  ``background`` requires 5 (400 ``BadPriority``); ``apns-expiration`` integer epoch seconds (400
  ``BadExpirationDate``); ``apns-collapse-id`` ≤ 64 bytes (400 ``BadCollapseId``); ``apns-id`` a
  UUID (400 ``BadMessageId``), echoed in the answer's ``apns-id`` (generated when absent).
- token: 64 hex characters (400 ``BadDeviceToken``); repeated headers → 400 ``DuplicateHeaders``.
- payload: non-empty (400 ``PayloadEmpty``), ≤ 4096 UTF-8 bytes, 5120 for ``voip`` (413
  ``PayloadTooLarge``), a JSON object with an ``aps`` dictionary (400 ``BadPayload``: Apple
  documents no reason for malformed JSON; this one is the sandbox's).
- dead token → 410 ``{"reason": "Unregistered", "timestamp": <ms>}``.
- success: 200, empty body, ``apns-id`` header.

Errors are ``{"reason": "..."}`` with the ``apns-id`` header.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import jwt
from starlette.requests import Request
from starlette.responses import Response

from .common import Exchange, ProviderApp, Reject
from .jwtcache import JwtCache

MAX_PAYLOAD = 4096
MAX_PAYLOAD_VOIP = 5120
TOKEN_MAX_AGE = 3600  # s, Apple: "APNs rejects tokens older than one hour"
CLOCK_SKEW = 300
#: push type → topic suffix (None: any topic of the app)
PUSH_TYPES: dict[str, str | None] = {
    "alert": "", "background": "", "location": ".location-query", "voip": ".voip",
    "complication": ".complication", "fileprovider": ".pushkit.fileprovider", "mdm": None,
    "liveactivity": ".push-type.liveactivity", "pushtotalk": ".voip-ptt",
    "widgets": ".push-type.widgets", "controls": ".push-type.controls",
}
_TOKEN_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class _InvalidToken(Exception):
    pass


class ApnsApp(ProviderApp):
    """APNs emulator; see the module docstring for the rules enforced."""

    name = "apns"
    default_reasons = {
        400: "BadDeviceToken", 403: "InvalidProviderToken", 404: "BadPath",
        405: "MethodNotAllowed", 410: "Unregistered", 413: "PayloadTooLarge",
        429: "TooManyRequests", 500: "InternalServerError", 503: "ServiceUnavailable",
    }

    def __init__(self, state) -> None:
        super().__init__(state)
        self._jwts = JwtCache(self._verify_jwt)

    def _verify_jwt(self, token: str) -> tuple[dict, dict]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _InvalidToken(f"malformed JWT: {exc}") from None
        if header.get("alg") != "ES256":
            raise _InvalidToken("alg must be ES256")
        key = self.state.accounts.apns_key(header.get("kid"))
        if key is None:
            raise _InvalidToken("kid is not a key id the sandbox knows")
        try:
            claims = jwt.decode(token, key.public_key, algorithms=["ES256"],
                                options={"verify_exp": False, "verify_iat": False,
                                         "verify_nbf": False, "verify_aud": False})
        except jwt.PyJWTError as exc:
            raise _InvalidToken(f"signature: {exc}") from None
        if claims.get("iss") != key.team_id:
            raise _InvalidToken("iss is not the key's team id")
        if not isinstance(claims.get("iat"), (int, float)):
            raise _InvalidToken("iat missing")
        return header, claims

    def error_body(self, rej: Reject, ex: Exchange) -> tuple[Any, dict[str, str]]:
        body: dict[str, Any] = {"reason": rej.reason}
        if rej.status == 410:
            body["timestamp"] = ex.extra.get("dead_since") or int(time.time() * 1000)
        headers = {}
        if ex.extra.get("apns_id"):
            headers["apns-id"] = ex.extra["apns_id"]
        return body, headers

    async def handle(self, request: Request, ex: Exchange) -> Response:
        h = ex.headers
        apns_id = h.get("apns-id")
        ex.extra["apns_id"] = apns_id if apns_id and _UUID_RE.match(apns_id) else None
        if apns_id and _UUID_RE.match(apns_id):
            ex.delivery_id = apns_id
        if ex.http_version != "2":
            raise Reject(505, "HTTP2Required", "APNs speaks HTTP/2 only")
        path = request.url.path
        if not path.startswith("/3/device/"):
            raise Reject(404, "BadPath")
        if ex.method != "POST":
            raise Reject(405, "MethodNotAllowed")
        token = path[len("/3/device/"):]
        ex.to = token or None
        if not token:
            raise Reject(400, "MissingDeviceToken")
        if ex.duplicate_headers:
            raise Reject(400, "DuplicateHeaders", ", ".join(ex.duplicate_headers))

        # provider token (JWT)
        auth = h.get("authorization")
        if not auth:
            raise Reject(403, "MissingProviderToken")
        scheme, _, provider_token = auth.partition(" ")
        if scheme.lower() != "bearer" or not provider_token.strip():
            raise Reject(403, "MissingProviderToken")
        try:
            jwt_header, claims = self._jwts.get(provider_token.strip())
        except _InvalidToken as exc:
            ex.extra["jwt_error"] = str(exc)
            raise Reject(403, "InvalidProviderToken") from None
        ex.extra["jwt_claims"] = claims
        ex.extra["jwt_header"] = jwt_header
        ex.extra["key_id"], ex.extra["team_id"] = jwt_header["kid"], claims["iss"]
        bundle = self.state.accounts.apns_key(jwt_header["kid"]).topic
        now = time.time()
        provider_token = provider_token.strip()
        tokens = self.state.apns_tokens
        if claims["iat"] > now + CLOCK_SKEW:
            raise Reject(403, "InvalidProviderToken", "iat in the future")
        if now - claims["iat"] > TOKEN_MAX_AGE:
            tokens.expire(jwt_header["kid"], provider_token)
            raise Reject(403, "ExpiredProviderToken")
        refused = tokens.observe(jwt_header["kid"], provider_token, claims["iat"], now)
        if refused == "TooManyProviderTokenUpdates":
            raise Reject(429, refused, "the key's provider token changed within "
                                       f"{tokens.min_interval:g} s")
        if refused is not None:
            raise Reject(403, refused)

        try:
            applied = await self.apply_faults(ex)
        except Reject as rej:
            if rej.reason == "ExpiredProviderToken":  # a fault: Apple now holds it expired
                tokens.expire(jwt_header["kid"], provider_token)
            raise

        if apns_id is not None and not _UUID_RE.match(apns_id):
            raise Reject(400, "BadMessageId")
        if ex.extra["apns_id"] is None:
            ex.extra["apns_id"] = str(uuid.uuid4()).upper()

        push_type = h.get("apns-push-type", "alert")
        if push_type not in PUSH_TYPES:
            raise Reject(400, "InvalidPushType")
        topic = h.get("apns-topic")
        if not topic:
            raise Reject(400, "MissingTopic")
        suffix = PUSH_TYPES[push_type]
        if suffix is None:
            if not topic.startswith(bundle):
                raise Reject(400, "TopicDisallowed")
        elif topic != bundle + suffix:
            raise Reject(400, "TopicDisallowed")

        priority = h.get("apns-priority", "5" if push_type == "background" else "10")
        if priority not in ("10", "5", "1"):
            raise Reject(400, "BadPriority")
        if push_type == "background" and priority != "5":
            raise Reject(400, "BadPriority", "background notifications require priority 5")
        expiration = h.get("apns-expiration")
        if expiration is not None and not re.fullmatch(r"\d{1,12}", expiration.strip()):
            raise Reject(400, "BadExpirationDate")
        collapse_id = h.get("apns-collapse-id")
        if collapse_id is not None and len(collapse_id.encode("latin-1", "replace")) > 64:
            raise Reject(400, "BadCollapseId")
        if not _TOKEN_RE.match(token):
            raise Reject(400, "BadDeviceToken")

        raw = ex.raw_body
        if not raw:
            raise Reject(400, "PayloadEmpty")
        limit = MAX_PAYLOAD_VOIP if push_type == "voip" else MAX_PAYLOAD
        ex.extra["payload_bytes"] = len(raw)
        if len(raw) > limit:
            raise Reject(413, "PayloadTooLarge", f"{len(raw)} > {limit} bytes")
        try:
            payload = json.loads(raw)
        except ValueError:
            raise Reject(400, "BadPayload", "payload is not JSON") from None
        ex.body = payload
        if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
            raise Reject(400, "BadPayload", "payload needs an aps dictionary")

        dead = self.state.dead.dead_since("apns", token)
        if dead is not None:
            ex.extra["dead_since"] = dead
            raise Reject(410, "Unregistered")

        ex.extra.update(push_type=push_type, priority=int(priority), collapse_id=collapse_id,
                        topic=topic)
        response = Response(b"", status_code=200, headers={"apns-id": ex.extra["apns_id"]})
        return self.accept(ex, response, None, applied)
