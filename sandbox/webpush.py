"""Web Push push-service emulator (RFC 8030 protocol, RFC 8291 encryption, RFC 8292 VAPID).

Subscriptions are created through the control API (``POST /webpush/subscriptions``), like a
browser's ``pushManager.subscribe()``: a P-256 key pair and a 16-byte auth secret; the endpoint is
``https://<public host>:<port+3>/wp/<id>`` (``--public-host``, default 127.0.0.1).

``POST /wp/<id>`` rules:

- unknown id → 404; dead (``POST /dead-tokens``) → 410 (RFC 8030 §7.3 / autopush errno 102/106);
- ``TTL`` header required, a non-negative integer (400, RFC 8030 §5.2);
- ``Urgency`` one of ``very-low``, ``low``, ``normal``, ``high`` (400, §5.3); ``Topic`` ≤ 32
  characters of the base64url alphabet (400, §5.4);
- VAPID (RFC 8292): ``Authorization: vapid t=<JWT>, k=<public key>``; JWT ES256 verified with
  ``k``; ``aud`` = origin of the endpoint, ``exp`` in the future and ≤ 24 h ahead, ``sub`` present
  → else 401; ``k`` differs from the subscription's application server key → 403;
- a body needs ``Content-Encoding: aes128gcm`` (400 otherwise) and ≤ 4096 bytes (413);
- the body is decrypted (RFC 8291) with the subscription's keys; the plaintext lands in the
  record's ``extra.plaintext``. A body that does not decrypt is still accepted (the push service
  cannot know) but is never displayed: ``extra.decrypt_error`` is set and ``/inbox`` skips it;
- success: 201 Created, ``Location: <origin>/m/<message id>``.

Errors follow Mozilla autopush's JSON: ``{"code", "errno", "error", "message", "more_info"}``.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any

import http_ece
import jwt
from starlette.requests import Request
from starlette.responses import Response

from .common import Exchange, ProviderApp, Reject
from .credentials import b64url_decode
from .jwtcache import JwtCache
from .state import decode_raw_point

MAX_BODY = 4096
MAX_VAPID_EXP = 24 * 3600
URGENCIES = ("very-low", "low", "normal", "high")
_TOPIC_RE = re.compile(r"^[A-Za-z0-9_\-]{1,32}$")
_ERRNO = {400: 110, 401: 109, 403: 109, 404: 102, 410: 106, 413: 104, 429: 999, 500: 999,
          503: 201}
_ERROR_TEXT = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
               410: "Gone", 413: "Payload Too Large", 429: "Too Many Requests",
               500: "Internal Server Error", 503: "Service Unavailable"}


class _VapidError(Exception):
    pass


def _parse_vapid(auth: str) -> tuple[str, str]:
    """``vapid t=<jwt>, k=<key>`` → (jwt, key). Raises _VapidError."""
    scheme, _, rest = auth.strip().partition(" ")
    if scheme.lower() != "vapid":
        raise _VapidError("Authorization scheme must be 'vapid' (RFC 8292)")
    params: dict[str, str] = {}
    for part in rest.split(","):
        k, sep, v = part.strip().partition("=")
        if sep:
            params[k.strip().lower()] = v.strip().strip('"')
    if not params.get("t") or not params.get("k"):
        raise _VapidError("vapid needs t= and k= parameters")
    return params["t"], params["k"]


class WebPushApp(ProviderApp):
    """Push-service emulator; see the module docstring."""

    name = "webpush"
    default_reasons = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden",
                       404: "NotFound", 410: "Gone", 413: "PayloadTooLarge",
                       429: "TooManyRequests", 500: "InternalServerError",
                       503: "ServiceUnavailable"}

    def __init__(self, state) -> None:
        super().__init__(state)
        self._origin = state.ports.https(state.ports.webpush)
        self._vapid = JwtCache(self._verify_vapid)

    def _verify_vapid(self, pair: str) -> dict[str, Any]:
        token, key = pair.split("\n", 1)
        try:
            public = decode_raw_point(key)
        except (ValueError, TypeError):
            raise _VapidError("k is not a P-256 public key") from None
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != "ES256":
                raise _VapidError("VAPID JWT must be ES256")
            claims = jwt.decode(token, public, algorithms=["ES256"],
                                options={"verify_exp": False, "verify_aud": False,
                                         "verify_iat": False, "verify_nbf": False})
        except jwt.PyJWTError as exc:
            raise _VapidError(f"VAPID JWT signature: {exc}") from None
        if claims.get("aud") != self._origin:
            raise _VapidError(f"aud must be the push service origin {self._origin}")
        if not claims.get("sub"):
            raise _VapidError("sub (mailto: or https: contact) is required")
        if not isinstance(claims.get("exp"), (int, float)):
            raise _VapidError("exp is required")
        return claims

    def error_body(self, rej: Reject, ex: Exchange) -> tuple[Any, dict[str, str]]:
        return {"code": rej.status, "errno": rej.code or _ERRNO.get(rej.status, 999),
                "error": _ERROR_TEXT.get(rej.status, "Error"),
                "message": rej.message or rej.reason or "",
                "more_info": "http://autopush.readthedocs.io/en/latest/http.html#error-codes"}, {}

    async def handle(self, request: Request, ex: Exchange) -> Response:
        path = request.url.path
        if not path.startswith("/wp/"):
            raise Reject(404, "NotFound", "Invalid endpoint", code=102)
        if ex.method != "POST":
            raise Reject(405, "MethodNotAllowed", "Method not allowed", code=999)
        sub_id = path[4:]
        sub = self.state.subscriptions.get(sub_id)
        ex.to = self.state.webpush_endpoint(sub_id)
        h = ex.headers
        raw = ex.raw_body
        ex.body = {"length": len(raw)} if raw else None
        if sub is None:
            raise Reject(404, "NotFound", "Request did not validate invalid token", code=102)

        auth = h.get("authorization")
        if not auth:
            raise Reject(401, "Unauthorized", "Missing VAPID Authorization header", code=109)
        try:
            token, key = _parse_vapid(auth)
            claims = self._vapid.get(token + "\n" + key)
        except _VapidError as exc:
            raise Reject(401, "Unauthorized", str(exc), code=109) from None
        ex.extra["vapid_claims"] = claims
        now = time.time()
        if claims["exp"] < now:
            raise Reject(401, "Unauthorized", "VAPID JWT expired", code=109)
        if claims["exp"] > now + MAX_VAPID_EXP + 60:
            raise Reject(401, "Unauthorized", "VAPID exp more than 24 hours ahead", code=109)
        if sub.application_server_key and key.rstrip("=") != sub.application_server_key:
            raise Reject(403, "Forbidden", "VAPID key does not match the subscription's "
                                           "applicationServerKey", code=109)

        applied = await self.apply_faults(ex)

        dead = self.state.dead.dead_since("webpush", sub_id)
        if dead is not None:
            raise Reject(410, "Gone", "Subscription is no longer valid", code=106)
        ttl = h.get("ttl")
        if ttl is None:
            raise Reject(400, "MissingTTL", "Missing TTL header", code=111)
        if not re.fullmatch(r"\d{1,10}", ttl.strip()):
            raise Reject(400, "InvalidTTL", "Invalid TTL header", code=112)
        urgency = h.get("urgency", "normal")
        if urgency not in URGENCIES:
            raise Reject(400, "InvalidUrgency", "Urgency must be very-low, low, normal or high")
        topic = h.get("topic")
        if topic is not None and not _TOPIC_RE.match(topic):
            raise Reject(400, "InvalidTopic",
                         "Topic must be at most 32 characters of the URL-safe base64 alphabet")
        ex.extra.update(ttl=int(ttl), urgency=urgency, collapse_id=topic,
                        subscription_id=sub_id)
        if raw:
            encoding = h.get("content-encoding")
            if encoding != "aes128gcm":
                raise Reject(400, "BadContentEncoding",
                             f"Content-Encoding must be aes128gcm, not {encoding!r}", code=110)
            if len(raw) > MAX_BODY:
                raise Reject(413, "PayloadTooLarge",
                             f"Body is {len(raw)} bytes; the maximum is {MAX_BODY}", code=104)
            try:
                plain = http_ece.decrypt(raw, private_key=sub.private_key,
                                         auth_secret=b64url_decode(sub.auth),
                                         version="aes128gcm")
                text = plain.decode("utf-8")
                ex.extra["plaintext"] = text
                try:
                    doc = json.loads(text)
                    ex.extra["payload"] = doc
                    if isinstance(doc, dict) and isinstance(doc.get("notify_delivery_id"), str):
                        ex.delivery_id = doc["notify_delivery_id"]
                except ValueError:
                    pass
            except Exception as exc:  # http_ece raises several types
                ex.extra["plaintext"] = None
                ex.extra["decrypt_error"] = f"{type(exc).__name__}: {exc}"
        else:
            ex.extra["plaintext"] = None

        msg_id = secrets.token_urlsafe(16)
        ex.extra["message_id"] = msg_id
        response = Response(b"", status_code=201,
                            headers={"location": f"{self._origin}/m/{msg_id}", "ttl": ttl})
        return self.accept(ex, response, {"location": f"{self._origin}/m/{msg_id}"}, applied)
