"""FCM HTTP v1 emulator with its OAuth2 token endpoint.

Rules from firebase.google.com/docs/reference/fcm/rest/v1/projects.messages,
firebase.google.com/docs/cloud-messaging/send-message and .../error-codes, and Google's OAuth2
service-account flow (developers.google.com/identity/protocols/oauth2/service-account):

- ``POST /token``: ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` and ``assertion``, a
  JWT RS256-signed by the service-account key (header ``kid`` = ``private_key_id``; claims
  ``iss`` = ``client_email``, ``aud`` = ``token_uri`` (or Google's own token URI, which
  google-auth always puts there), ``scope`` with
  ``.../auth/firebase.messaging`` or ``.../auth/cloud-platform``, ``iat``/``exp`` ≤ 1 h apart).
  Answers ``{"access_token", "expires_in": 3599, "token_type": "Bearer"}``; errors are OAuth2
  ``{"error": "invalid_grant", "error_description": ...}`` (400).
- ``POST /v1/projects/<project>/messages:send`` with ``Authorization: Bearer <access token>``
  (missing / unknown / expired → 401 ``UNAUTHENTICATED``); another project → 403
  ``PERMISSION_DENIED``. Body ``{"message": {...}, "validate_only": bool}``: proto3 JSON, so both
  ``snake_case`` and ``lowerCamelCase`` names are accepted and unknown names are refused (400
  ``INVALID_ARGUMENT``); exactly one of ``token`` / ``topic`` / ``condition``; ``data`` values
  strings; ``android.priority`` ``NORMAL``/``HIGH``; ``android.ttl`` a duration like ``"3600s"``
  (≤ 4 weeks); the payload a device receives (notification + data + platform part) ≤ 4096 bytes.
  Dead token → 404 ``UNREGISTERED``. Success: ``{"name": "projects/<p>/messages/<id>"}``.

Errors have Google's shape ``{"error": {"code", "message", "status", "details": [...]}}`` with an
``type.googleapis.com/google.firebase.fcm.v1.FcmError`` ``errorCode`` entry.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl

import jwt
from starlette.requests import Request
from starlette.responses import Response

from .common import Exchange, ProviderApp, Reject, json_response
from .jwtcache import JwtCache

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # google-auth's fixed assertion aud
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ACCEPTED_SCOPES = {
    "https://www.googleapis.com/auth/firebase.messaging",
    "https://www.googleapis.com/auth/cloud-platform",
}
ACCESS_TOKEN_LIFETIME = 3599
MAX_PAYLOAD = 4096
MAX_TTL = 28 * 24 * 3600
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
DEFAULT_MESSAGES = {
    400: "Request contains an invalid argument.",
    401: "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
         "cookie or other valid authentication credential.",
    403: "SenderId mismatch",
    404: "Requested entity was not found.",
    429: "Quota exceeded for quota metric 'Send requests' of service 'fcm.googleapis.com'.",
    500: "Internal error encountered.",
    503: "The service is currently unavailable.",
}
_SEND_RE = re.compile(r"^/v1/projects/([^/]+)/messages:send$")
_DURATION_RE = re.compile(r"^(\d+)(\.\d{1,9})?s$")
_TOPIC_RE = re.compile(r"^[a-zA-Z0-9\-_.~%]{1,900}$")

# Message schema: field (snake_case) → kind. Kinds: "str", "bool", "map" (str → str),
# "any" (any JSON object), "enum:A|B", "duration", or a nested schema dict.
_NOTIFICATION = {"title": "str", "body": "str", "image": "str"}
_ANDROID_NOTIFICATION = {k: "anyval" for k in (
    "title", "body", "icon", "color", "sound", "tag", "click_action", "body_loc_key",
    "body_loc_args", "title_loc_key", "title_loc_args", "channel_id", "ticker", "sticky",
    "event_time", "local_only", "notification_priority", "default_sound",
    "default_vibrate_timings", "default_light_settings", "vibrate_timings", "visibility",
    "notification_count", "light_settings", "image", "bypass_proxy_notification", "proxy")}
_SCHEMA: dict[str, Any] = {
    "name": "str", "data": "map", "notification": _NOTIFICATION,
    "android": {
        "collapse_key": "str", "priority": "enum:NORMAL|HIGH", "ttl": "duration",
        "restricted_package_name": "str", "data": "map", "notification": _ANDROID_NOTIFICATION,
        "fcm_options": {"analytics_label": "str"}, "direct_boot_ok": "bool",
        "bandwidth_constrained_ok": "bool", "restricted_satellite_ok": "bool",
    },
    "webpush": {"headers": "map", "data": "map", "notification": "any",
                "fcm_options": {"link": "str", "analytics_label": "str"}},
    "apns": {"headers": "map", "payload": "any",
             "fcm_options": {"analytics_label": "str", "image": "str"},
             "live_activity_token": "str"},
    "fcm_options": {"analytics_label": "str"},
    "token": "str", "topic": "str", "condition": "str",
}


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def _bad_request(field: str, description: str) -> Reject:
    return Reject(400, "INVALID_ARGUMENT", description,
                  details=[{"@type": BAD_REQUEST,
                            "fieldViolations": [{"field": field, "description": description}]}])


def _check(obj: Any, schema: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate ``obj`` against ``schema``; return it with snake_case keys. Raises Reject."""
    if not isinstance(obj, dict):
        raise _bad_request(where, f"Invalid value at '{where}', expected an object")
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = _snake(key)
        kind = schema.get(name)
        if kind is None:
            raise _bad_request(where, f"Invalid JSON payload received. Unknown name \"{key}\" "
                                      f"at '{where}': Cannot find field.")
        path = f"{where}.{name}"
        if value is None:
            continue
        if isinstance(kind, dict):
            value = _check(value, kind, path)
        elif kind == "str":
            if not isinstance(value, str):
                raise _bad_request(path, f"Invalid value at '{path}' (TYPE_STRING), {value!r}")
        elif kind == "bool":
            if not isinstance(value, bool):
                raise _bad_request(path, f"Invalid value at '{path}' (TYPE_BOOL), {value!r}")
        elif kind == "map":
            if not isinstance(value, dict):
                raise _bad_request(path, f"Invalid value at '{path}', expected a map")
            for i, (k, v) in enumerate(value.items()):
                if not isinstance(v, str):
                    raise _bad_request(f"{path}[{i}].value",
                                       f"Invalid value at '{path}[{i}].value' (TYPE_STRING), "
                                       f"{json.dumps(v)}")
        elif kind == "any":
            if not isinstance(value, dict):
                raise _bad_request(path, f"Invalid value at '{path}', expected an object")
        elif kind.startswith("enum:"):
            allowed = kind[5:].split("|")
            if value not in allowed:
                raise _bad_request(path, f"Invalid value at '{path}' (type.googleapis.com/"
                                         f"google.firebase.fcm.v1.AndroidMessagePriority), "
                                         f"\"{value}\"")
        elif kind == "duration":
            m = _DURATION_RE.match(value) if isinstance(value, str) else None
            if not m:
                raise _bad_request(path, f"Invalid value at '{path}' (type.googleapis.com/"
                                         f"google.protobuf.Duration), Field '{path}', Illegal "
                                         f"duration format; duration must end with 's'")
            if int(m.group(1)) > MAX_TTL:
                raise Reject(400, "INVALID_ARGUMENT", f"{path} exceeds the maximum of 4 weeks")
        out[name] = value
    return out


def _payload_size(msg: dict[str, Any]) -> int:
    """Largest payload one platform would receive: notification + data + that platform's part."""
    def size(*parts: Any) -> int:
        return len(json.dumps([p for p in parts if p], separators=(",", ":"),
                              ensure_ascii=False).encode("utf-8"))
    base = (msg.get("notification"), msg.get("data"))
    android = msg.get("android") or {}
    apns = msg.get("apns") or {}
    web = msg.get("webpush") or {}
    return max(size(*base),
               size(*base, android.get("notification"), android.get("data")),
               size(*base, apns.get("payload")),
               size(*base, web.get("notification"), web.get("data")))


class FcmApp(ProviderApp):
    """FCM v1 + OAuth2 token endpoint emulator; see the module docstring."""

    name = "fcm"
    default_reasons = {
        400: "INVALID_ARGUMENT", 401: "THIRD_PARTY_AUTH_ERROR", 403: "SENDER_ID_MISMATCH",
        404: "UNREGISTERED", 429: "QUOTA_EXCEEDED", 500: "INTERNAL", 503: "UNAVAILABLE",
    }

    def __init__(self, state) -> None:
        super().__init__(state)
        c = state.creds
        self._key = c.fcm_public_key
        self._kid = c.fcm_private_key_id
        self._email = c.fcm_client_email
        self._token_uri = c.fcm_token_uri
        self._project = c.fcm_project_id
        self._assertions = JwtCache(self._verify_assertion)
        self._tokens: dict[str, float] = {}

    # -- errors ------------------------------------------------------------------------------
    def error_body(self, rej: Reject, ex: Exchange) -> tuple[Any, dict[str, str]]:
        if ex.extra.get("oauth"):
            return {"error": rej.reason, "error_description": rej.message or ""}, {}
        status = GOOGLE_STATUS.get(rej.status, "UNKNOWN")
        if rej.details is not None:
            details = rej.details
        elif (rej.reason and rej.reason != status) or rej.status in (400, 404, 429, 500, 503):
            details = [{"@type": FCM_ERROR, "errorCode": rej.reason or status}]
        else:
            details = []
        message = rej.message or DEFAULT_MESSAGES.get(rej.status, status)
        return {"error": {"code": rej.status, "message": message, "status": status,
                          "details": details}}, {}

    # -- OAuth2 token endpoint ---------------------------------------------------------------
    def _verify_assertion(self, assertion: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            raise Reject(400, "invalid_grant", "Invalid JWT: Token must be a short-lived token "
                                               "and in a reasonable timeframe.") from None
        if header.get("alg") != "RS256":
            raise Reject(400, "invalid_grant", "Invalid JWT Signature.")
        if header.get("kid") not in (None, self._kid):
            raise Reject(400, "invalid_grant", "Invalid JWT Signature.")
        try:
            claims = jwt.decode(assertion, self._key, algorithms=["RS256"],
                                options={"verify_exp": False, "verify_iat": False,
                                         "verify_aud": False, "verify_nbf": False})
        except jwt.PyJWTError:
            raise Reject(400, "invalid_grant", "Invalid JWT Signature.") from None
        if claims.get("iss") != self._email:
            raise Reject(400, "invalid_grant", "Invalid issuer: the service account is unknown.")
        if claims.get("aud") not in (self._token_uri, GOOGLE_TOKEN_URI):
            raise Reject(400, "invalid_grant", "Invalid JWT: audience must be the token URI.")
        return claims

    async def _token(self, ex: Exchange) -> Response:
        ex.extra["oauth"] = True
        form = dict(parse_qsl(ex.raw_body.decode("utf-8", "replace"), keep_blank_values=True))
        ex.body = {k: (v[:40] + "…" if k == "assertion" and len(v) > 40 else v)
                   for k, v in form.items()}
        if ex.method != "POST":
            raise Reject(405, "invalid_request", "Method not allowed.")
        if form.get("grant_type") != JWT_BEARER:
            raise Reject(400, "unsupported_grant_type",
                         f"Invalid grant_type: {form.get('grant_type', '')}")
        assertion = form.get("assertion", "")
        if not assertion:
            raise Reject(400, "invalid_request", "Missing required parameter: assertion")
        claims = self._assertions.get(assertion)
        ex.extra["jwt_claims"] = claims
        now = time.time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, (int, float)) or not isinstance(exp, (int, float)) \
                or exp - iat > 3600 or exp < now or iat > now + 300:
            raise Reject(400, "invalid_grant", "Invalid JWT: Token must be a short-lived token "
                                               "(60 minutes) and in a reasonable timeframe.")
        scopes = set(str(claims.get("scope", "")).split())
        if not scopes & ACCEPTED_SCOPES:
            raise Reject(400, "invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        token = "ya29.sbx-" + secrets.token_urlsafe(48)
        self._tokens[token] = now + ACCESS_TOKEN_LIFETIME
        if len(self._tokens) > 10_000:
            self._tokens = {t: e for t, e in self._tokens.items() if e > now}
        body = {"access_token": token, "expires_in": ACCESS_TOKEN_LIFETIME,
                "token_type": "Bearer"}
        ex.status, ex.response = 200, {**body, "access_token": token[:16] + "…"}
        ex.accepted = True
        return json_response(body)

    # -- messages:send ---------------------------------------------------------------------------
    async def handle(self, request: Request, ex: Exchange) -> Response:
        path = request.url.path
        if path == "/token":
            return await self._token(ex)
        m = _SEND_RE.match(path)
        if not m:
            raise Reject(404, "NOT_FOUND", f"The requested URL {path} was not found.",
                         details=[])
        if ex.method != "POST":
            raise Reject(405, "METHOD_NOT_ALLOWED", "Method not allowed.", details=[])

        auth = ex.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        expires = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if expires is None or expires < time.time():
            reason = "ACCESS_TOKEN_EXPIRED" if expires is not None else (
                "CREDENTIALS_MISSING" if not auth else "ACCESS_TOKEN_TYPE_UNSUPPORTED")
            raise Reject(401, "UNAUTHENTICATED", details=[
                {"@type": ERROR_INFO, "reason": reason, "domain": "googleapis.com",
                 "metadata": {"service": "fcm.googleapis.com",
                              "method": "google.firebase.fcm.v1.FcmService.SendMessage"}}])
        project = m.group(1)
        if project != self._project:
            raise Reject(403, "PERMISSION_DENIED",
                         f"Permission 'cloudmessaging.messages.create' denied on resource "
                         f"'//cloudresourcemanager.googleapis.com/projects/{project}' "
                         f"(or it may not exist).",
                         details=[{"@type": ERROR_INFO, "reason": "IAM_PERMISSION_DENIED",
                                   "domain": "cloudresourcemanager.googleapis.com",
                                   "metadata": {"permission": "cloudmessaging.messages.create",
                                                "resource": f"projects/{project}"}}])
        try:
            body = json.loads(ex.raw_body or b"null")
        except ValueError as exc:
            raise _bad_request("", f"Invalid JSON payload received. {exc}") from None
        ex.body = body
        if not isinstance(body, dict):
            raise _bad_request("", "Invalid JSON payload received. Expected an object.")
        raw_msg = body.get("message")
        if isinstance(raw_msg, dict):
            ex.to = raw_msg.get("token") or raw_msg.get("topic") or raw_msg.get("condition")
            data = raw_msg.get("data")
            if isinstance(data, dict) and isinstance(data.get("notify_delivery_id"), str):
                ex.delivery_id = data["notify_delivery_id"]

        applied = await self.apply_faults(ex)

        validate_only = False
        for key, value in body.items():
            if key == "message":
                continue
            if key in ("validate_only", "validateOnly"):
                if not isinstance(value, bool):
                    raise _bad_request(key, f"Invalid value at '{key}' (TYPE_BOOL), {value!r}")
                validate_only = value
                continue
            raise _bad_request("", f"Invalid JSON payload received. Unknown name \"{key}\": "
                                   f"Cannot find field.")
        if raw_msg is None:
            raise Reject(400, "INVALID_ARGUMENT", "Request contains an invalid argument. "
                                                  "'message' is required.")
        msg = _check(raw_msg, _SCHEMA, "message")
        targets = [k for k in ("token", "topic", "condition") if msg.get(k)]
        if len(targets) != 1:
            raise Reject(400, "INVALID_ARGUMENT",
                         "Exactly one of message.token, message.topic or message.condition "
                         "must be specified.")
        if "topic" in msg and not _TOPIC_RE.match(msg["topic"]):
            raise Reject(400, "INVALID_ARGUMENT", "Invalid topic name.")
        if "token" in msg and (len(msg["token"]) < 8 or any(c.isspace() for c in msg["token"])):
            raise Reject(400, "INVALID_ARGUMENT",
                         "The registration token is not a valid FCM registration token")
        size = _payload_size(msg)
        ex.extra["payload_bytes"] = size
        if size > MAX_PAYLOAD:
            raise Reject(400, "INVALID_ARGUMENT",
                         f"Message is too big: {size} bytes > {MAX_PAYLOAD} bytes")
        if "token" in msg:
            dead = self.state.dead.dead_since("fcm", msg["token"])
            if dead is not None:
                raise Reject(404, "UNREGISTERED")

        android = msg.get("android") or {}
        apns_headers = (msg.get("apns") or {}).get("headers") or {}
        ex.extra.update(
            collapse_id=android.get("collapse_key") or apns_headers.get("apns-collapse-id"),
            priority=android.get("priority"), ttl=android.get("ttl"),
            validate_only=validate_only)
        name = f"projects/{self._project}/messages/"
        if validate_only:
            answer = {"name": name + "fake_message_id"}
            ex.status, ex.response = 200, answer
            return json_response(answer)
        answer = {"name": name + f"0:{time.time_ns() // 1000}%{secrets.token_hex(8)}"}
        return self.accept(ex, json_response(answer), answer, applied)
