"""The errors every endpoint shares, added to each operation of the OpenAPI schema (a
drf-spectacular postprocessing hook, ``SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]``).

The views document their own answers and errors; what the middleware, the authentication and
the parser answer for any endpoint is added here, once: 401 where an API key is required, 400
(``invalid_json``), 411 and 413 where a body is taken, 429 and 422 on the send endpoints
(views with ``counts_as_send``). Every 4xx answer gets the error body's schema and an example,
and the main request bodies an example (:func:`request_examples`).
"""

from __future__ import annotations

#: status → (error codes, what it means). Codes are those of notify.api.errors, the body-size
#: middleware and the send path (notify.errors.SendRejected).
COMMON = {
    400: (["invalid_json", "invalid_request"], "the body is not JSON, or fields are invalid (`error.fields`, "
                                               "machine-readable `error.reasons`); nothing is written"),
    401: (["missing_api_key", "invalid_api_key"], "no `Authorization: Api-Key <key>` header, or an unknown or "
                                                  "revoked key"),
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
            "items": {"type": "object", "description": "`batch_rejected` only: each refused item's error by index"},
        }}},
}


def request_examples() -> dict[tuple[str, str], dict[str, dict]]:
    """(path, method) → {example name: {"summary", "value"}}: request bodies as a product team
    sends them (the README's shapes). Channel names come from the registry."""
    from channels import registry

    channels = list(registry.channels())
    content = {"push": {"title": "Order shipped", "body": "Order A-1042 is on its way", "data": {"order": "A-1042"}},
               "sms": {"body": "Order A-1042 shipped"},
               "email": {"subject": "Your order shipped", "text": "Order A-1042 is on its way.",
                         "html": "<p>Order <b>A-1042</b> is on its way.</p>", "from_name": "Shop"}}
    template_content = {"en": {"push": {"title": "Shipped", "body": "Hi {{ name }}, order {{ order }} is on its way"},
                               "sms": {"body": "Order {{ order }} shipped"}},
                        "ko": {"push": {"title": "발송 완료", "body": "{{ name }}님, 주문 {{ order }}이 발송되었습니다"},
                               "sms": {"body": "주문 {{ order }} 발송"}}}
    by_template = {"recipient": "user-42", "template": "order-shipped", "data": {"name": "Minji", "order": "A-1042"},
                   "category": "orders", "priority": "high", "ttl": 3600, "event_id": "order-A-1042-shipped"}
    return {
        ("/api/v1/notifications", "post"): {
            "template": {"summary": "a template's latest published version", "value": by_template},
            "content": {"summary": "content given in the call, two channels only",
                        "value": {"recipient": "user-42", "content": content, "channels": channels[:2]}},
        },
        ("/api/v1/notifications/batch", "post"): {"batch": {"summary": "two sends, all or none", "value": {
            "notifications": [by_template, {**by_template, "recipient": "user-43", "event_id": "order-A-1043-shipped",
                                            "data": {"name": "Jae", "order": "A-1043"}}]}}},
        ("/api/v1/recipients/{external_id}", "put"): {"recipient": {"summary": "create or update", "value": {
            "name": "Minji Kim", "locale": "ko-KR", "timezone": "Asia/Seoul", "email": "minji@example.com",
            "phone": "+821012345678"}}},
        ("/api/v1/recipients/{external_id}/preferences", "put"): {"opt-out": {
            "summary": "out of one channel for one category, and of every push channel", "value": {"preferences": [
                {"channel": channels[-1], "category": "marketing", "enabled": False},
                {"channel": "push", "category": "", "enabled": False}]}}},
        ("/api/v1/templates", "post"): {"template": {"summary": "a template with two locales, published", "value": {
            "name": "order-shipped", "category": "orders", "default_locale": "en", "content": template_content,
            "publish": True}}},
        ("/api/v1/templates/{name}", "patch"): {"patch": {"summary": "change its category",
                                                          "value": {"category": "shipping"}}},
        ("/api/v1/templates/{name}/versions", "post"): {"draft": {"summary": "a new version kept as a draft", "value": {
            "content": template_content, "publish": False}}},
        ("/api/v1/templates/{name}/preview", "post"): {"preview": {"summary": "version 2 in Korean", "value": {
            "data": {"name": "Minji", "order": "A-1042"}, "version": 2, "locale": "ko"}}},
    }


def _example(code: str, message: str) -> dict:
    return {"summary": code, "value": {"error": {"code": code, "message": message, "fields": {}}}}


def _common_statuses(operation: dict, method: str, view) -> list[int]:
    statuses = []
    if any("ApiKeyAuth" in requirement for requirement in operation.get("security", [])):
        statuses.append(401)
    if "requestBody" in operation or method in ("post", "put", "patch"):
        statuses += [400, 411, 413]
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
    examples = request_examples()
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
            for status in _common_statuses(operation, method, view):
                codes, meaning = COMMON[status]
                if str(status) not in responses:
                    responses[str(status)] = {"description": f"{', '.join(f'`{c}`' for c in codes)}: {meaning}"}
            for status, response in responses.items():
                if not status.startswith("4"):
                    continue
                content = response.setdefault("content", {}).setdefault("application/json", {})
                content.setdefault("schema", ref)
                if "examples" not in content and "example" not in content:
                    codes = (_codes_in(response.get("description", "")) or COMMON.get(int(status), ([], ""))[0]
                             or [FALLBACK.get(int(status), "error")])
                    content["examples"] = {code: _example(code, _message(code)) for code in codes}
    return result


def _codes_in(description: str) -> list[str]:
    """The `code`s a view's description of an error names (``"`template_not_found`: …"``)."""
    parts = description.split("`")
    return [part for part in parts[1::2] if part and part.replace("_", "").isalpha() and part.islower()]


def _message(code: str) -> str:
    return code.replace("_", " ")
