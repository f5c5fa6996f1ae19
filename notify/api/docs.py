"""The errors every endpoint shares and the examples, added to each operation of the OpenAPI
schema (a drf-spectacular postprocessing hook, ``SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]``).

The views document their own answers and errors; what the middleware, the authentication and
the parser answer for any endpoint is added here, once: 401 where an API key is required, 403
``missing_scope`` there too, naming the operation's scope (notify.api.permissions), 400
(``invalid_json``), 411 and 413 where a body is taken, 404 ``not_found`` where the path has
a variable, 429 and 422 on the send endpoints
(views with ``counts_as_send``). Every 4xx answer gets the error body's schema and an example,
every JSON request body an example (:func:`request_examples`) and every 2xx JSON answer one
(:func:`response_examples`), unless its view gives its own; tests/test_schema_examples.py checks
each against its schema and that none is missing. Two answers are completed to what the API
says: the 201 of the operations that create or update (:data:`CREATED`), and a delivery's
``sent_at``, null until sent.
"""

from __future__ import annotations

import copy

from .. import scopes
from .permissions import MissingScope, required_scope

#: status → (error codes, what it means). Codes are those of notify.api.errors, the body-size
#: middleware and the send path (notify.errors.SendRejected).
COMMON = {
    400: (["invalid_json", "invalid_request"], "the body is not JSON, or fields are invalid (`error.fields`, "
                                               "machine-readable `error.reasons`); nothing is written"),
    401: (["missing_api_key", "invalid_api_key", "invalid_token"],
          "no `Authorization: Api-Key <key>` (or `Bearer <token>`) header, an unknown, revoked or expired key, or "
          "an unknown, expired or revoked OAuth2 token, or one of a disabled client"),
    403: (["missing_scope"], "the API key or token lacks the scope this operation needs (`error.scope` names it)"),
    404: (["not_found"], "no such object in this app (another app's is unknown alike), or a path variable of "
                         "the wrong shape"),
    411: (["length_required"], "a chunked body: send a Content-Length"),
    413: (["body_too_large"], "the body is over NOTIFY_MAX_BODY_BYTES"),
    422: (["payload_too_large", "body_too_long", "too_many_segments", "reserved_data_key", "invalid_header",
           "empty_content", "template_error", "no_channel"],
          "content a provider would refuse (the provider's rule is the code), a template that fails, or no "
          "channel to send on"),
    429: (["rate_limited"], "over NOTIFY_API_RATE_LIMIT for this API key"),
}

#: The code of an error a view describes without naming one.
FALLBACK = {404: "not_found", 405: "method_not_allowed", 409: "conflict"}

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string", "description": "machine-readable, e.g. `recipient_not_found`"},
            "message": {"type": "string", "description": "for people"},
            "fields": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}},
                       "description": "messages by field path (`content.en.sms.body`)"},
            "reasons": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}},
                        "description": "`invalid_request` only: each message's code (`required`, `too_short`, …)"},
            "items": {"type": "object", "description": "`batch_rejected` and `bulk_rejected` only: each refused item's error "
                                                        "(`code`, `message`, `fields`) by index"},
            "scope": {"type": "string", "enum": list(scopes.SCOPES),
                      "description": "`missing_scope` only: the scope the API key lacks"},
        }}},
}


#: What the examples register and send to: an iPhone's APNs device token (32 bytes as 64 hex
#: characters), an Android phone's FCM registration token (instance id, ``:APA91b``, base64url)
#: and a Chrome Web Push subscription (a real P-256 public key and a 16-byte auth secret).
APNS_TOKEN = "c01afaacdddf164eed43bcb974b5cbc340ff41e31b988a5acbede4dad751c758"
FCM_TOKEN = ("4IiC1WcQ8dI:APA91bDqjYDrHW77Xim_owXKtNMZCg_P9ZHVGMUKN6afhWTck7fSXv8XGKHGG8mWp2XE_N5v8ULsI7y3mF-FRCrAvsQh1"
             "Pofy92vZ_Dyc0xRz-FE2kQ_YKEjt7hUBVppome86tz7x5qA")
WEB_SUBSCRIPTION = {
    "endpoint": "https://fcm.googleapis.com/fcm/send/23PAjEBCcBNMjYdsNGSjuA:APA91biD8OwPI19jSFXabR6PP_o0x5pYARqLHsR9"
                "TY6uNW-n05oUKZu9Ier-hCwErC_tDtL87Y1_mPxZO9eEB8NmWM88y-PjIo4oSQ-ecOiMiZTMaQ4HteZuYqTtFP6OC-ceFM01Ai0g",
    "keys": {"p256dh": "BJ-Y3yiLzQ01HIoK9RALDpZKprrIwpzH343EmuJIkFbz-AESS4DfBbQRPfQG2Tg_wJobohMtNSMmxYjTgAQrzu0",
             "auth": "dD9JvLb6o_26nY8QbG8-PQ"}}
#: Each device platform's example: (what it is, the body without ``platform``).
DEVICE_BODIES = {
    "ios": ("an iPhone: its APNs device token (64 hex characters)", {"token": APNS_TOKEN}),
    "android": ("an Android phone: its FCM registration token", {"token": FCM_TOKEN}),
    "web": ("a browser: its Web Push subscription (PushSubscription.toJSON())", {"subscription": WEB_SUBSCRIPTION}),
}
PHONE = "+821012345678"
TEMPLATE_CONTENT = {
    "en": {"push": {"title": "Shipped", "body": "Hi {{ name }}, order {{ order }} is on its way"},
           "sms": {"body": "Order {{ order }} shipped"}},
    "ko": {"push": {"title": "발송 완료", "body": "{{ name }}님, 주문 {{ order }}이 발송되었습니다"},
           "sms": {"body": "주문 {{ order }} 발송"}}}


def _choice(preferred: str, choices) -> str:
    """``preferred`` when the deployment enables it, else its last enabled channel (the
    examples that name a channel in an enum stay valid with fewer channels)."""
    choices = list(choices)
    return preferred if preferred in choices else choices[-1]


def request_examples() -> dict[tuple[str, str], dict[str, dict]]:
    """(path, method) → {example name: {"summary", "value"}}: request bodies as a product team
    sends them (the README's shapes). Channel names come from the registry."""
    from channels import registry

    from .serializers import PREFERENCE_CHOICES

    channels = list(registry.channels())
    content = {"push": {"title": "Order shipped", "body": "Order A-1042 is on its way", "data": {"order": "A-1042"}},
               "sms": {"body": "Order A-1042 shipped"},
               "email": {"subject": "Your order shipped", "text": "Order A-1042 is on its way.",
                         "html": "<p>Order <b>A-1042</b> is on its way.</p>", "from_name": "Shop"}}
    by_template = {"recipient": "user-42", "template": "order-shipped", "data": {"name": "Minji", "order": "A-1042"},
                   "category": "orders", "priority": "high", "ttl": 3600, "event_id": "order-A-1042-shipped"}
    sends = {
        "template": {"summary": "a template's latest published version", "value": by_template},
        "content": {"summary": "content given in the call, two channels only",
                    "value": {"recipient": "user-42", "content": content, "channels": channels[:2]}},
    }
    if {"push", "sms"} <= set(PREFERENCE_CHOICES):
        sends["fallback"] = {"summary": "push first; SMS only if no push could be sent", "value": {
            "recipient": "user-42", "template": "order-shipped", "data": {"name": "Minji", "order": "A-1042"},
            "fallback": ["push", "sms"], "event_id": "order-A-1042-out-for-delivery"}}
    devices = {platform: {"summary": DEVICE_BODIES[platform][0], "value": {"platform": platform,
                                                                           **DEVICE_BODIES[platform][1]}}
               for platform in registry.device_platforms() if platform in DEVICE_BODIES}
    limited = _choice("sms", PREFERENCE_CHOICES)
    off_by_default = _choice("email", PREFERENCE_CHOICES)
    return {
        ("/api/v1/notifications", "post"): sends,
        ("/api/v1/notifications/batch", "post"): {"batch": {"summary": "two sends, all or none", "value": {
            "notifications": [by_template, {**by_template, "recipient": "user-43", "event_id": "order-A-1043-shipped",
                                            "data": {"name": "Jae", "order": "A-1043"}}]}}},
        ("/api/v1/notifications/bulk", "post"): {
            "bulk": {"summary": "one template, each recipient with its own data; all or none", "value": {
                "template": "order-shipped", "category": "orders", "priority": "high", "recipients": [
                    {"recipient": "user-42", "data": {"name": "Minji", "order": "A-1042"},
                     "event_id": "order-A-1042-shipped"},
                    {"recipient": "user-43", "data": {"name": "Jae", "order": "A-1043"},
                     "event_id": "order-A-1043-shipped"}]}},
            "skip": {"summary": "accept the valid recipients, list the refused ones", "value": {
                "template": "order-shipped", "on_invalid": "skip", "recipients": [
                    {"recipient": "user-42", "data": {"name": "Minji", "order": "A-1042"}},
                    {"recipient": "user-404", "data": {"name": "Kim", "order": "A-1044"}}]}}},
        ("/api/v1/recipients/{external_id}", "put"): {
            "recipient": {"summary": "create or update", "value": {
                "name": "Minji Kim", "locale": "ko-KR", "timezone": "Asia/Seoul", "email": "minji@example.com",
                "phone": PHONE, "tags": ["vip", "beta"]}},
            "pause": {"summary": "pause every notification but required categories (`muted_until`: until "
                               "then; `muted: false` ends it)", "value": {"muted": True}},
        },
        ("/api/v1/recipients/{external_id}/devices", "post"): devices,
        ("/api/v1/recipients/{external_id}/preferences", "put"): {"opt-out": {
            "summary": "out of one channel for one category, and of every push channel", "value": {"preferences": [
                {"channel": channels[-1], "category": "marketing", "enabled": False},
                {"channel": "push", "category": "", "enabled": False}]}}},
        ("/api/v1/categories/{name}", "put"): {
            "create": {"summary": "`orders`: no email unless asked for, at most 3 SMS an hour, quiet at night",
                       "value": {"label": "Order updates", "description": "Shipping and delivery of your orders",
                                 "defaults": {off_by_default: False}, "rate_limits": {limited: "3/hour;10/day"},
                                 "over_limit": "defer", "quiet_hours": "22:00-08:00"}},
            "required": {"summary": "`security`: recipients cannot opt out of it", "value": {
                "label": "Security alerts", "description": "Sign-in codes and new-device warnings", "required": True}},
            "change": {"summary": "change one rule of an existing category (the others stay)",
                       "value": {"rate_limits": {"*": "5/hour;20/day"}}},
        },
        ("/api/v1/templates", "post"): {"template": {"summary": "a template with two locales, published", "value": {
            "name": "order-shipped", "category": "orders", "default_locale": "en", "content": TEMPLATE_CONTENT,
            "publish": True}}},
        ("/api/v1/templates/{name}", "patch"): {"patch": {"summary": "change its category",
                                                          "value": {"category": "shipping"}}},
        ("/api/v1/templates/{name}/versions", "post"): {
            "draft": {"summary": "a new version kept as a draft", "value": {
                "content": TEMPLATE_CONTENT, "publish": False}},
            "a/b": {"summary": "an A/B test: half of the recipients get variant b's title", "value": {
                "content": TEMPLATE_CONTENT, "variants": [
                    {"name": "a", "weight": 50, "content": TEMPLATE_CONTENT},
                    {"name": "b", "weight": 50, "content": {
                        locale: {**parts, "push": {**parts["push"], "title": title}}
                        for (locale, parts), title in zip(TEMPLATE_CONTENT.items(), ("📦 On its way", "📦 출발했어요"))}}],
                "publish": True}},
        },
        ("/api/v1/templates/{name}/preview", "post"): {
            "preview": {"summary": "version 2 in Korean", "value": {
                "data": {"name": "Minji", "order": "A-1042"}, "version": 2, "locale": "ko"}},
            "as a recipient": {"summary": "the latest published version as user-42 would get it", "value": {
                "data": {"name": "Minji", "order": "A-1042"}, "recipient": "user-42"}},
        },
        ("/api/v1/broadcasts", "post"): {
            "tagged": {"summary": "Korean-speaking recipients tagged `vip` or `beta`, by push and email only", "value": {
                "template": "order-shipped", "data": {"name": "고객", "order": "SALE-7"}, "category": "marketing",
                "channels": [c for c in channels if c not in ("sms",)][:2],
                "segment": {"locale": "ko", "tags": ["vip", "beta"], "tags_match": "any"}}},
            "everyone": {"summary": "every recipient of the app, template version 2 pinned", "value": {
                "template": "order-shipped", "template_version": 2, "data": {"name": "customer", "order": "ALL-1"},
                "segment": {"all": True}}},
            "listed": {"summary": "a list of recipients (at most NOTIFY_BROADCAST_MAX_IDS)", "value": {
                "template": "order-shipped", "data": {"name": "customer", "order": "A-7"},
                "segment": {"external_ids": ["user-42", "user-43"]}}},
        },
        ("/api/v1/credentials/{provider}", "put"): {"own account": {
            "summary": "the app's own account and sender (the rest stays the deployment's)",
            "value": {"values": credential_example()[2]}}},
    }


#: Example values of provider settings, by setting key: an app's own SMS account.
SETTING_EXAMPLES = {"account_sid": "AC3e1d8f2a9b7c4d6e0f1a2b3c4d5e6f70", "auth_token": "7c9a4e1f0b2d8c6a5e3f9d1b7a2c4e6f",
                    "from_number": "+14155550123"}


def credential_example() -> tuple[str, str, dict, dict]:
    """(provider, channel, values sent, values shown) of the credentials examples: the SMS
    channel's provider (else the first enabled channel's) with the settings of
    :data:`SETTING_EXAMPLES` it declares; a secret is sent, never shown."""
    from channels import registry

    channel = (registry.channels_in_group("sms") or registry.channels())[0]
    cls = registry.channel_class(channel)
    sent = {s.key: SETTING_EXAMPLES[s.key] for s in cls.app_settings() if s.key in SETTING_EXAMPLES} or {
        s.key: "value" for s in cls.app_settings() if s.required}
    shown = {k: v for k, v in sent.items() if not next(s for s in cls.settings if s.key == k).secret}
    return cls.provider, channel, sent, shown


# --- 2xx answers -------------------------------------------------------------------------------
# One story: recipient user-42 (Minji, Seoul) with an iPhone, an Android phone and Chrome, a
# phone number and an email address; the template order-shipped; notification 1d696834-… sent
# on 2 March 2026 at 10:15 in Seoul. A delivery's channel is the enabled channel playing its
# role (:func:`_roles`): the examples name no channel themselves.

NOTIFICATION_ID = "1d696834-6aea-49dc-a5b6-96d1eab3186b"
SCHEDULED_ID = "9fda2a7e-d354-4c1e-852f-cf04fab8f9ff"
ACCEPTED_AT = "2026-03-02T01:15:30.482Z"
EMAIL = "minji@example.com"
#: Role → where a delivery in that role goes (a Web Push delivery's ``to`` is its endpoint).
ADDRESSES = {"ios": APNS_TOKEN, "android": FCM_TOKEN, "web": WEB_SUBSCRIPTION["endpoint"], "sms": PHONE,
             "email": EMAIL}
DELIVERY_IDS = {"ios": "6e8bbe65-5841-4e34-9338-aaa4ea38c1d7", "android": "c4f94762-f1cd-4624-8b94-93caaf3e7d42",
                "web": "f7c46408-f1c9-4665-9295-caa68a6761a2", "sms": "8a6b3160-b0a2-4184-9df4-a9b6801c43ed",
                "email": "f1b79512-7312-4039-b3e6-974296135b17"}
#: What the push adapters report about the example's content (``content_info``).
PUSH_INFO = {"ios": {"payload_bytes": 187, "payload_limit": 4096},
             "android": {"payload_bytes": 214, "payload_limit": 4096},
             "web": {"payload_bytes": 296, "payload_limit": 4096}}
SMS_INFO = {"encoding": "UCS-2", "segments": 1}


def _roles() -> dict[str, str]:
    """Example role → the enabled channel playing it: each device platform's channel, and the
    first channel of the ``sms`` and of the ``email`` content group. A role no enabled channel
    plays is left out of the examples."""
    from channels import registry

    roles = dict(registry.device_platforms())
    for group in ("sms", "email"):
        found = registry.channels_in_group(group)
        if found:
            roles[group] = found[0]
    return roles


def _ok(summary: str, value) -> dict:
    return {"summary": summary, "value": value}


def response_examples() -> dict[tuple[str, str, str], dict[str, dict]]:
    """(path, method, status) → {example name: {"summary", "value"}}: the 2xx answers, field for
    field as the serializers give them (notify.api.serializers, views, categories,
    template_serializers)."""
    from channels import registry

    from .serializers import PREFERENCE_CHOICES

    roles = _roles()
    broadcast_running = {
        "id": 17, "status": "running", "template": "order-shipped", "template_version": 2, "category": "marketing",
        "segment": {"locale": "ko", "tags": ["vip", "beta"], "tags_match": "any"}, "total": 48210, "written": 30000,
        "queued": 41877, "sent": 31240, "failed": 112, "suppressed": 1420, "cancelled": 0, "pending": 9105,
        "created_at": ACCEPTED_AT, "finished_at": None, "cancelled_at": None}
    broadcast_done = {
        **broadcast_running, "id": 18, "status": "done", "segment": {"all": True}, "total": 2, "written": 2,
        "queued": 3, "sent": 3, "failed": 0, "suppressed": 0, "pending": 0,
        "finished_at": "2026-03-02T01:15:31.020Z"}

    def queued(role: str, status: str = "queued", reason: str | None = None, addressed: bool = True,
               **extra) -> dict | None:
        """A delivery of a 202 (notify.accept), or None when no channel plays ``role``."""
        if role not in roles:
            return None
        return {"id": DELIVERY_IDS[role], "channel": roles[role], "to": ADDRESSES[role] if addressed else None,
                "status": status, "reason": reason, **extra}

    def delivery(role: str, status: str, sent_at: str | None, updated_at: str, events=(), reason: str = "",
                 attempts: int = 1, provider_message_id: str = "", step: int = 0, scheduled_for: str | None = None,
                 delivery_id: str | None = None) -> dict | None:
        """A delivery of a notification (DeliveryOut), or None when no channel plays ``role``."""
        if role not in roles:
            return None
        return {"id": delivery_id or DELIVERY_IDS[role], "channel": roles[role], "to": ADDRESSES[role],
                "status": status, "reason": reason, "attempts": attempts, "provider_message_id": provider_message_id,
                "sent_at": sent_at, "updated_at": updated_at, "step": step,
                "events": [{"kind": kind, "occurred_at": at, "reason": why} for kind, at, why in events],
                "scheduled_for": scheduled_for}

    def rows(*entries) -> list[dict]:
        return [entry for entry in entries if entry is not None]

    def push_info(role: str) -> dict:
        return {"content_info": PUSH_INFO[role]}

    def accepted_body(deliveries: list, event_id: str | None, template: dict | None = None,
                      notification_id: str = NOTIFICATION_ID) -> dict:
        body = {"id": notification_id, "event_id": event_id, "deliveries": rows(*deliveries)}
        return {**body, "template": template} if template else body

    def notification(deliveries: list, notification_id: str = NOTIFICATION_ID, event_id: str = "order-A-1042-shipped",
                     priority: str = "high", ttl: int = 3600, created_at: str = ACCEPTED_AT,
                     send_at: str | None = None, cancelled_at: str | None = None, fallback: list | None = None) -> dict:
        deliveries = rows(*deliveries)
        sent = sorted((d["sent_at"], d["step"], d["channel"]) for d in deliveries if d["sent_at"])
        return {"id": notification_id, "event_id": event_id, "recipient": "user-42", "category": "orders",
                "priority": priority, "ttl": ttl, "created_at": created_at, "send_at": send_at,
                "cancelled_at": cancelled_at, "fallback": fallback or [], "delivered_by": sent[0][2] if sent else None,
                "deliveries": deliveries}

    # --- notifications
    template_used = {"name": "order-shipped", "version": 3, "locale": "ko", "variant": None}
    accepted = {
        "template": _ok("by template: a delivery per device and the phone, with what each provider will get",
                        accepted_body([queued("ios", **push_info("ios")), queued("android", **push_info("android")),
                                       queued("sms", content_info=SMS_INFO)],
                                      "order-A-1042-shipped", template_used)),
        "held": _ok("quiet hours hold the push until 08:00 in Seoul; the email is opted out", accepted_body([
            queued("ios", "scheduled", "quiet_hours", scheduled_for="2026-03-02T23:00:00Z", **push_info("ios")),
            queued("email", "suppressed", "opted_out")], None)),
        "fallback": _ok("a fallback: the SMS waits on standby until every push has failed", accepted_body([
            queued("ios", step=0, **push_info("ios")), queued("android", "suppressed", "no_device", False, step=0),
            queued("web", "suppressed", "no_device", False, step=0),
            queued("sms", "standby", "fallback", step=1, content_info=SMS_INFO)],
            "order-A-1042-out-for-delivery", {**template_used, "variant": "b"})),
    }
    second = [{**entry, "id": new_id, **changes} for entry, new_id, changes in (
        (queued("android", **push_info("android")), "ccba3f81-faa1-4499-9d99-fa59d1b5c7d1",
         {"to": FCM_TOKEN.replace("4IiC1WcQ8dI", "eL2p9Yk3R0E")}),
        (queued("sms"), "5f06a3bc-0431-4e02-9e9d-1490258c51a7",
         {"to": "+14155550123", "content_info": {"encoding": "GSM-7", "segments": 1}})) if entry is not None]
    batch_second = accepted_body(second, "order-A-1043-shipped", {**template_used, "locale": "en"},
                                 "e7caf7d6-8595-4b2d-9e88-cdf08f6ebbac")

    delivered = notification([
        delivery("ios", "opened", "2026-03-02T01:15:30.913Z", "2026-03-02T01:17:02.350Z",
                 [("opened", "2026-03-02T01:17:02.114Z", "")], provider_message_id=DELIVERY_IDS["ios"]),
        delivery("android", "sent", "2026-03-02T01:15:30.987Z", "2026-03-02T01:15:30.987Z",
                 provider_message_id="projects/shop-app-prod/messages/0:1772414130987654%c3a1b2d4f9fd7ecd"),
        delivery("sms", "delivered", "2026-03-02T01:15:31.207Z", "2026-03-02T01:15:34.880Z",
                 [("sent", "2026-03-02T01:15:31.950Z", ""), ("delivered", "2026-03-02T01:15:34.612Z", "")],
                 provider_message_id="SM3f9e1a7c2b5d4e8f9a0b1c2d3e4f5a6b")])
    left = delivery("sms", "suppressed", None, "2026-03-02T09:40:05.201Z", attempts=0, reason="opted_out",
                    delivery_id="19051e6e-bc68-437b-8e4e-2d1f425636ef")
    scheduled = notification([
        delivery("ios", "scheduled", None, "2026-03-02T09:40:05.201Z", attempts=0,
                 scheduled_for="2026-03-03T00:00:00Z", delivery_id="65d414f9-f322-4a7b-b29c-62a454e8e27e"),
        delivery("email", "scheduled", None, "2026-03-02T09:40:05.201Z", attempts=0,
                 scheduled_for="2026-03-03T00:00:00Z", delivery_id="52577774-337a-459b-80d1-46a6b3208bc1"), left],
        notification_id=SCHEDULED_ID, event_id="spring-sale-2026-user-42", priority="normal", ttl=86400,
        created_at="2026-03-02T09:40:05.201Z", send_at="2026-03-03T00:00:00Z")
    shown = {"delivered": _ok("sent on three channels: opened on the iPhone, the SMS delivered", delivered),
             "scheduled": _ok("a send_at in the future: each delivery waits until its scheduled_for; the SMS is "
                         "opted out", scheduled)}
    if {"email", "sms"} <= set(roles):
        shown["fallback"] = _ok("the email bounced, so the fallback's next step (SMS) was sent", notification([
            delivery("email", "bounced", "2026-03-02T01:15:31.004Z", "2026-03-02T01:15:33.760Z",
                     [("bounced", "2026-03-02T01:15:33.512Z", "Permanent:General")],
                     provider_message_id="0100018e00b1c2d3-7f4e2a9b-1c3d-4e5f-8a9b-0c1d2e3f4a5b-000000",
                     delivery_id="eada5450-305c-4a15-9779-695a1588b7b2"),
            delivery("sms", "delivered", "2026-03-02T01:15:41.320Z", "2026-03-02T01:15:44.902Z",
                     [("delivered", "2026-03-02T01:15:44.655Z", "")], step=1,
                     provider_message_id="SM7c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f",
                     delivery_id="9cd73870-02e8-4de5-bcb5-01b54217b8bf")],
            notification_id="a1cc5a49-fcea-4bd4-93fe-a866f85907e1", event_id="order-A-1042-delivered",
            fallback=[[roles["email"]], [roles["sms"]]]))
    cancelled_at = "2026-03-02T11:02:47.530Z"
    after = [{**row, "status": "cancelled", "reason": "cancelled", "scheduled_for": None, "updated_at": cancelled_at}
             if row["status"] == "scheduled" else row for row in scheduled["deliveries"]]
    cancelled = {**scheduled, "cancelled_at": cancelled_at, "deliveries": after,
                 "cancelled": [row["id"] for row in after if row["status"] == "cancelled"],
                 "not_cancelled": [{"id": row["id"], "channel": row["channel"], "status": row["status"]}
                                   for row in after if row["status"] != "cancelled"]}

    # --- recipients, devices, preferences
    recipient = {"external_id": "user-42", "name": "Minji Kim", "locale": "ko-KR", "timezone": "Asia/Seoul",
                 "email": EMAIL, "phone": PHONE, "muted": False, "muted_until": None, "quiet_hours": "", "tags": ["vip", "beta"],
                 "created_at": "2026-02-27T08:12:40.118Z", "updated_at": "2026-03-01T13:44:09.502Z"}
    paused = {**recipient, "muted": True, "muted_until": "2026-03-09T00:00:00Z",
              "updated_at": "2026-03-02T03:20:11.047Z"}
    device_rows = {}
    for number, platform in enumerate((p for p in registry.device_platforms() if p in DEVICE_BODIES), start=17):
        body = DEVICE_BODIES[platform][1]
        device_rows[platform] = {"id": number, "platform": platform,
                                 "token": body.get("token") or body["subscription"]["endpoint"],
                                 "subscription": body.get("subscription"), "active": True,
                                 "created_at": f"2026-02-27T08:{number - 4}:{number + 20}.412Z"}

    def preferences(*chosen) -> dict:
        return {"preferences": [{"channel": channel, "category": category, "enabled": enabled, "source": source}
                                for channel, category, enabled, source in sorted(chosen)]}

    last = list(registry.channels())[-1]  # the request example's
    opted_out = preferences((last, "marketing", False, "api"),
                            *((channel, "", False, "api") for channel in registry.channels_in_group("push")))
    mixed = preferences((last, "marketing", False, "page"),
                        *((channel, "", False, "provider") for channel in registry.channels_in_group("sms")))

    # --- categories
    category = {"name": "orders", "label": "Order updates", "description": "Shipping and delivery of your orders",
                "required": False, "defaults": {_choice("email", PREFERENCE_CHOICES): False},
                "rate_limits": {_choice("sms", PREFERENCE_CHOICES): "3/hour;10/day"}, "over_limit": "defer",
                "quiet_hours": "22:00-08:00", "tracking": True, "created_at": "2026-02-20T02:30:00.118Z",
                "updated_at": "2026-02-20T02:30:00.118Z"}
    security = {"name": "security", "label": "Security alerts", "description": "Sign-in codes and new-device warnings",
                "required": True, "defaults": {}, "rate_limits": {}, "over_limit": "suppress", "quiet_hours": "",
                "tracking": True, "created_at": "2026-02-20T02:31:12.904Z", "updated_at": "2026-02-20T02:31:12.904Z"}
    changed = {**category, "rate_limits": {"*": "5/hour;20/day"}, "updated_at": "2026-03-02T05:12:45.330Z"}

    # --- templates
    variant_b = {locale: {**parts, "push": {**parts["push"], "title": title}}
                 for (locale, parts), title in zip(TEMPLATE_CONTENT.items(), ("📦 On its way", "📦 출발했어요"))}
    version_rows = [
        {"number": 1, "published_at": "2026-02-20T02:40:00.512Z", "created_at": "2026-02-20T02:40:00.508Z",
         "locales": ["en", "ko"], "variants": []},
        {"number": 2, "published_at": "2026-02-24T07:05:31.220Z", "created_at": "2026-02-23T10:18:44.091Z",
         "locales": ["en", "ko"], "variants": []},
        {"number": 3, "published_at": "2026-02-26T01:00:02.731Z", "created_at": "2026-02-26T01:00:02.725Z",
         "locales": ["en", "ko"], "variants": ["a", "b"]},
        {"number": 4, "published_at": None, "created_at": "2026-03-02T04:51:19.604Z", "locales": ["en", "ko"],
         "variants": []}]
    summary = {"name": "order-shipped", "category": "orders", "default_locale": "en", "truncate_push": False,
               "archived": False, "archived_at": None, "latest_published": 3, "latest_version": 4,
               "created_at": "2026-02-20T02:40:00.502Z", "updated_at": "2026-02-20T02:40:00.502Z"}
    reset = {"name": "password-reset", "category": "security", "default_locale": "en", "truncate_push": False,
             "archived": False, "archived_at": None, "latest_published": 1, "latest_version": 1,
             "created_at": "2026-02-20T02:44:37.016Z", "updated_at": "2026-02-20T02:44:37.016Z"}
    template = {**summary, "versions": version_rows}
    version_1 = {"template": "order-shipped", "number": 1, "published_at": version_rows[0]["published_at"],
                 "created_at": version_rows[0]["created_at"], "locales": ["en", "ko"], "content": TEMPLATE_CONTENT,
                 "variants": []}
    created = {**summary, "latest_published": 1, "latest_version": 1, "versions": version_rows[:1],
               "version": version_1}
    version_3 = {**version_1, "number": 3, "published_at": version_rows[2]["published_at"],
                 "created_at": version_rows[2]["created_at"],
                 "variants": [{"name": "a", "weight": 50, "content": TEMPLATE_CONTENT},
                              {"name": "b", "weight": 50, "content": variant_b}]}
    draft = {**version_1, "number": 4, "published_at": None, "created_at": version_rows[3]["created_at"]}
    published = {**draft, "published_at": "2026-03-02T05:30:00.941Z"}

    rendered = {"push": {"title": "발송 완료", "body": "Minji님, 주문 A-1042이 발송되었습니다"},
                "sms": {"body": "주문 A-1042 발송"}}
    long_body = f"주문 {'A-1042, ' * 90}발송"  # 11 UCS-2 segments
    preview_channels, too_long = {}, {}
    for channel in registry.channels():
        cls = registry.channel_class(channel)
        group = cls.content_group
        if group not in rendered:
            continue
        info = PUSH_INFO.get(getattr(cls, "platform", None) or "", {}) if group == "push" else \
            SMS_INFO if group == "sms" else {}
        preview_channels[channel] = {"content": rendered[group], "content_info": info, "error": None}
        too_long[channel] = preview_channels[channel] if group != "sms" else {
            "content": {"body": long_body}, "content_info": {},
            "error": {"code": "too_many_segments", "message": "11 UCS-2 segments > 10"}}
    preview = {"template": "order-shipped", "version": 2, "locale": "ko", "variant": None, "channels": preview_channels}

    # --- provider credentials
    provider, channel, given, visible = credential_example()
    credentials_v2 = {"provider": provider, "channel": channel, "values": visible,
                      "secrets": sorted(set(given) - set(visible)), "version": 2,
                      "updated_at": "2026-03-02T05:20:41.006Z", "readable": True}

    return {
        ("/api/v1/notifications", "post", "202"): accepted,
        ("/api/v1/notifications/batch", "post", "202"): {"batch": _ok(
            "every item accepted, in the request's order", {"notifications": [accepted["template"]["value"],
                                                                             batch_second]})},
        ("/api/v1/notifications/bulk", "post", "202"): {
            "bulk": _ok("every recipient accepted, in the request's order", {"accepted": [
                {"index": 0, "id": accepted["template"]["value"]["id"], "event_id": "order-A-1042-shipped",
                 "replayed": False},
                {"index": 1, "id": batch_second["id"], "event_id": "order-A-1043-shipped", "replayed": False}],
                "refused": {}}),
            "skip": _ok("`on_invalid: skip`: the unknown recipient refused, the other accepted", {"accepted": [
                {"index": 0, "id": accepted["template"]["value"]["id"], "event_id": None, "replayed": False}],
                "refused": {"1": {"code": "recipient_not_found", "message": "no recipient 'user-404'",
                                  "fields": {"recipient": ["not found"]}}}})},
        ("/api/v1/notifications/{notification_id}", "get", "200"): shown,
        ("/api/v1/notifications/{notification_id}", "delete", "200"): {"cancelled": _ok(
            "the scheduled deliveries cancelled; the opted-out SMS was never going out", cancelled)},
        ("/api/v1/recipients/{external_id}", "get", "200"): {"recipient": _ok("a recipient", recipient),
                                                             "paused": _ok("paused for a week", paused)},
        ("/api/v1/recipients/{external_id}", "put", "200"): {"updated": _ok("an existing recipient, updated",
                                                                            recipient)},
        ("/api/v1/recipients/{external_id}", "put", "201"): {"created": _ok("a new recipient", {
            **recipient, "updated_at": recipient["created_at"]})},
        ("/api/v1/recipients/{external_id}/erase", "post", "200"): {"erased": _ok(
            "three devices and two preferences deleted, 14 deliveries kept without their addresses, the scheduled "
            "one cancelled", {"external_id": "user-42", "erased_at": "2026-03-04T07:21:09.318Z", "devices": 3,
                              "preferences": 2, "notifications": 6, "deliveries": 14,
                              "cancelled": ["65d414f9-f322-4a7b-b29c-62a454e8e27e"], "sending": 0})},
        ("/api/v1/recipients/{external_id}/devices", "get", "200"): {"devices": _ok(
            "one device per platform", list(device_rows.values()))},
        ("/api/v1/recipients/{external_id}/devices", "post", "200"): {
            f"{platform} again": _ok("a known device, re-activated", row) for platform, row in device_rows.items()},
        ("/api/v1/recipients/{external_id}/devices", "post", "201"): {
            platform: _ok(f"a new {platform} device", row) for platform, row in device_rows.items()},
        ("/api/v1/recipients/{external_id}/preferences", "get", "200"): {"choices": _ok(
            "set through the API, on the preference page, or by a provider (an SMS STOP reply)", mixed)},
        ("/api/v1/recipients/{external_id}/preferences", "put", "200"): {"opt-out": _ok(
            "after the opt-out example: each push channel named", opted_out)},
        ("/api/v1/recipients/{external_id}/preference-link", "get", "200"): {"link": _ok(
            "valid for 30 days (NOTIFY_PREFERENCE_LINK_MAX_AGE)", {
                "url": "https://notify.example.com/preferences/eyJhIjoxLCJyIjo0Mn0:1vBq7Z:"
                       "LXEWQrcmsEQBYnyp-6wy9chTD7GQPMTbAiWHF5IaSIE",
                "expires_at": "2026-04-01T01:15:30.482Z"})},
        ("/api/v1/categories", "get", "200"): {"categories": _ok("by name", [category, security])},
        ("/api/v1/categories/{name}", "get", "200"): {"category": _ok("a category", category)},
        ("/api/v1/categories/{name}", "put", "200"): {"changed": _ok("the rate limit changed, the rest kept", changed)},
        ("/api/v1/categories/{name}", "put", "201"): {"created": _ok("a new category", category)},
        ("/api/v1/templates", "get", "200"): {"templates": _ok("the app's templates, by name", [summary, reset])},
        ("/api/v1/templates", "post", "201"): {"created": _ok("version 1, published", created)},
        ("/api/v1/templates/{name}", "get", "200"): {"template": _ok("with every version", template)},
        ("/api/v1/templates/{name}", "patch", "200"): {"patched": _ok("category changed", {
            **template, "category": "shipping", "updated_at": "2026-03-02T06:03:58.117Z"})},
        ("/api/v1/templates/{name}/versions", "get", "200"): {"versions": _ok(
            "three published, the newest a draft", version_rows)},
        ("/api/v1/templates/{name}/versions", "post", "201"): {"draft": _ok("version 4, a draft", draft)},
        ("/api/v1/templates/{name}/versions/{number}", "get", "200"): {"a/b": _ok(
            "version 3 with its A/B variants", version_3)},
        ("/api/v1/templates/{name}/versions/{number}/publish", "post", "200"): {"published": _ok(
            "version 4, now the one sends use", published)},
        ("/api/v1/templates/{name}/preview", "post", "200"): {
            "preview": _ok("each channel's content as it would be sent", preview),
            "refused": _ok("long data: the SMS would be refused (its provider's rule as the code)",
                           {**preview, "channels": too_long}),
        },
        ("/api/v1/broadcasts", "post", "202"): {"started": _ok("fanning out in the background",
                                                              {"id": 17, "status": "running", "total": 48210})},
        ("/api/v1/broadcasts", "get", "200"): {"broadcasts": _ok("newest first (the last 100)",
                                                                 [broadcast_done, broadcast_running])},
        ("/api/v1/broadcasts/{broadcast_id}", "get", "200"): {
            "running": _ok("midway: 30,000 recipients written, their deliveries going out", broadcast_running),
            "done": _ok("every recipient written, every delivery final", broadcast_done)},
        ("/api/v1/broadcasts/{broadcast_id}/cancel", "post", "200"): {"cancelled": _ok(
            "stopped midway: what was not sent yet is cancelled", {
                **broadcast_running, "status": "cancelled", "cancelled": 9105, "pending": 0,
                "cancelled_at": "2026-03-02T01:16:02.004Z"})},
        ("/api/v1/credentials", "get", "200"): {"credentials": _ok("the providers with settings of the app's own",
                                                                   [credentials_v2])},
        ("/api/v1/credentials/{provider}", "get", "200"): {"credentials": _ok(
            "non-secret values and which secrets are set, never their values", credentials_v2)},
        ("/api/v1/credentials/{provider}", "put", "200"): {"changed": _ok("replaced: version 2", credentials_v2)},
        ("/api/v1/credentials/{provider}", "put", "201"): {"created": _ok("the app's first own settings", {
            **credentials_v2, "version": 1, "updated_at": "2026-02-20T02:35:10.220Z"})},
    }


#: Operations that answer 201 when they create and 200 when they update, whose view documents
#: only the 200: the 201, same body, is added here.
CREATED = {("/api/v1/recipients/{external_id}", "put"): "created: the recipient did not exist",
           ("/api/v1/recipients/{external_id}/devices", "post"): "registered: a device not known before (200: a "
                                                                  "known one, re-activated and moved to this "
                                                                  "recipient)"}


def _example(code: str, message: str) -> dict:
    return {"summary": code, "value": {"error": {"code": code, "message": message, "fields": {}}}}


def _common_statuses(operation: dict, path: str, method: str, view) -> list[int]:
    statuses = []
    if any("ApiKeyAuth" in requirement for requirement in operation.get("security", [])):
        statuses += [401, 403]
    if "requestBody" in operation or method in ("post", "put", "patch"):
        statuses += [400, 411, 413]
    elif getattr(view, "checks_path", False):
        statuses.append(400)  # a path variable no object can have (notify.api.views.RecipientScopedView)
    if "{" in path:
        statuses.append(404)  # each look-up by a path variable is in the caller's app only
    if getattr(view, "counts_as_send", False):
        statuses += [422, 429]
    return statuses


def add_common_errors(result: dict, generator, request, public) -> dict:
    """drf-spectacular postprocessing hook: see the module docstring. Returns ``result``."""
    views = {(path, method.lower()): callback for path, _, method, callback in generator.endpoints}
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    # The serializer-made ApiError (notify.api.template_serializers) names only code, message
    # and fields: the full body replaces it, under the same name every view refers to.
    schemas["ApiError"] = ERROR_SCHEMA
    schemas.pop("ApiErrorBody", None)
    ref = {"$ref": "#/components/schemas/ApiError"}
    # DeliveryOut's serializer field says a date-time, but a delivery not sent yet has none.
    sent_at = schemas.get("DeliveryOut", {}).get("properties", {}).get("sent_at")
    if sent_at is not None and "nullable" not in sent_at:
        sent_at.update(nullable=True, description="when its provider took it; null until then")
    examples = request_examples()
    answers = response_examples()
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            callback = views.get((path, method))
            view = getattr(callback, "cls", None)
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None and (path, method) in examples:
                body.setdefault("examples", examples[(path, method)])
            responses = operation["responses"]
            if (path, method) in CREATED and "200" in responses and "201" not in responses:
                responses["201"] = {**copy.deepcopy(responses["200"]), "description": CREATED[(path, method)]}
            for status, response in responses.items():
                content = response.get("content", {}).get("application/json")
                if status.startswith("2") and content is not None and (path, method, status) in answers \
                        and "examples" not in content and "example" not in content:
                    content["examples"] = answers[(path, method, status)]
            for status in _common_statuses(operation, path, method, view):
                codes, meaning = COMMON[status]
                if str(status) not in responses:
                    responses[str(status)] = {"description": f"{', '.join(f'`{c}`' for c in codes)}: {meaning}"}
                if status == 403:
                    _name_the_scope(responses["403"], required_scope(view))
            for status, response in responses.items():
                if not status.startswith("4"):
                    continue
                content = response.setdefault("content", {}).setdefault("application/json", {})
                content.setdefault("schema", ref)
                if "examples" not in content and "example" not in content:
                    codes = (_codes_in(response.get("description", "")) or COMMON.get(int(status), ([], ""))[0]
                             or [FALLBACK.get(int(status), "error")])
                    content["examples"] = {code: _example(code, _message(code)) for code in codes}
            operation["responses"] = dict(sorted(responses.items()))
    return result


def _name_the_scope(response: dict, scope: str) -> None:
    """The operation's 403 says which scope it needs, and its example is that refusal."""
    response["description"] += f"; this operation needs the {scope} scope" + (
        "" if scope == scopes.ADMIN else " (or admin)")
    content = response.setdefault("content", {}).setdefault("application/json", {})
    content.setdefault("examples", {"missing_scope": {"summary": f"a key without the {scope} scope", "value": {
        "error": {"code": "missing_scope", "message": str(MissingScope(scope).detail), "fields": {},
                  "scope": scope}}}})


def _codes_in(description: str) -> list[str]:
    """The `code`s a view's description of an error names (``"`template_not_found`: …"``)."""
    parts = description.split("`")
    return [part for part in parts[1::2] if part and part.replace("_", "").isalpha() and part.islower()]


def _message(code: str) -> str:
    return code.replace("_", " ")


def group_by_resource(result: dict, generator, request, public) -> dict:
    """drf-spectacular postprocessing hook: each operation under ``/api/v<N>/`` is tagged with
    the path's next part (``notifications``, ``recipients``, ``templates``, ...), so Swagger UI
    and ReDoc show one section per resource instead of one ``api`` section holding nearly all.
    The operation ids stay as generated (a client generated from the schema keeps its names).
    Returns ``result``."""
    for path, operations in result.get("paths", {}).items():
        parts = path.strip("/").split("/")
        if len(parts) < 3 or parts[0] != "api" or not parts[1].startswith("v"):
            continue
        for operation in operations.values():
            if isinstance(operation, dict) and "operationId" in operation:
                operation["tags"] = [parts[2]]
    return result
