"""One JSON error shape for every 4xx of the API:

    {"error": {"code": "<machine-readable>", "message": "<human>", "fields": {"<field>": ["..."]},
               "reasons": {"<field>": ["<machine-readable>"]}}}

plus ``scope`` on ``missing_scope`` (403): the scope the API key lacks (notify.api.permissions).

``reasons`` (only on ``invalid_request``) gives, in the order of ``fields``' messages, the code of
each: ``required``, ``invalid``, ``max_length``, ... (DRF's), or the project's own where a rule
has several ways to fail (a phone number: notify.validators.e164).
"""

from __future__ import annotations

from django.http import Http404, JsonResponse
from django_ratelimit.exceptions import Ratelimited
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .. import metrics
from ..errors import SendRejected
from ..accept import BatchRejected
from ..bulk import BulkRejected
from .auth import InvalidToken
from .permissions import MissingScope

#: The first class ``exc`` is an instance of names its code.
_CODES = {
    exceptions.ParseError: "invalid_json",
    exceptions.NotAuthenticated: "missing_api_key",
    InvalidToken: "invalid_token",
    exceptions.AuthenticationFailed: "invalid_api_key",
    exceptions.PermissionDenied: "forbidden",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.Throttled: "rate_limited",
}


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def flatten(detail, prefix: str = "") -> dict:
    """DRF error detail as ``{"a.b.0": ["message", ...]}`` (the ``fields`` of an error body)."""
    out: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(detail, list) and detail and all(not isinstance(v, (dict, list)) for v in detail):
        out[prefix or "non_field_errors"] = [str(v) for v in detail]
    elif isinstance(detail, list):
        for index, value in enumerate(detail):
            out.update(flatten(value, f"{prefix}.{index}" if prefix else str(index)))
    else:
        out[prefix or "non_field_errors"] = [str(detail)]
    return out


def exception_handler(exc, context):
    """DRF exception handler producing the shape above; a send request's refusal is counted
    (notify.metrics.record_refusal)."""
    response = _error_response(exc, context)
    metrics.record_refusal(context.get("view"), response)
    return response


def _error_response(exc, context):
    """The error response of ``exc``; SendRejected carries its own status."""
    if isinstance(exc, (BatchRejected, BulkRejected)):
        body = error_body(exc.code, str(exc))
        body["error"]["items"] = {str(index): item for index, item in exc.items.items()}
        return Response(body, status=exc.status)
    if isinstance(exc, MissingScope):
        body = error_body("missing_scope", str(exc.detail))
        body["error"]["scope"] = exc.scope
        return Response(body, status=status.HTTP_403_FORBIDDEN)
    if isinstance(exc, SendRejected):
        return Response(error_body(exc.code, str(exc), exc.fields), status=exc.status)
    if isinstance(exc, Ratelimited):
        return Response(error_body("rate_limited", "too many requests for this API key"), status=429)
    if isinstance(exc, Http404):
        return Response(error_body("not_found", "not found"), status=404)
    if isinstance(exc, exceptions.ValidationError):
        body = error_body("invalid_request", "the request has invalid fields", flatten(exc.detail))
        body["error"]["reasons"] = flatten(exc.get_codes())
        return Response(body, status=status.HTTP_400_BAD_REQUEST)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    code = next((c for cls, c in _CODES.items() if isinstance(exc, cls)), "error")
    response.data = error_body(code, str(getattr(exc, "detail", exc)))
    return response


def json_404(request, exception=None):
    return JsonResponse(error_body("not_found", "not found"), status=404)


def json_500(request):
    return JsonResponse(error_body("internal_error", "internal error"), status=500)
