"""The API root (``GET /api/v1/``: links to every resource and to the documentation) and the
documentation itself: the OpenAPI schema, Swagger UI and ReDoc, served from this service's own
static files (drf-spectacular-sidecar), none of them needing an API key."""

from __future__ import annotations

import threading

from django.urls import reverse
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, inline_serializer
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

#: (link name, URL name, its path variable or None, what it is), in the order the root lists
#: them. A path variable is written ``{variable}`` in the link (an RFC 6570 URI template).
LINKS = [
    ("notifications", "notifications", None, "POST a send"),
    ("notifications_batch", "notifications-batch", None, "POST up to 500 sends, all or none"),
    ("notifications_bulk", "notifications-bulk", None, "POST one template to up to 10,000 recipients, "
                                                       "each with its own data"),
    ("notification", "notification", "notification_id", "GET a notification with its deliveries"),
    ("broadcasts", "broadcasts", None, "POST a template to a segment of recipients; GET the app's broadcasts"),
    ("broadcast", "broadcast", "broadcast_id", "GET a broadcast's progress (POST …/cancel to cancel it)"),
    ("recipient", "recipient", "external_id", "PUT / GET a recipient"),
    ("recipient_erase", "recipient-erase", "external_id", "POST: erase a recipient's personal data"),
    ("devices", "devices", "external_id", "a recipient's devices"),
    ("preferences", "preferences", "external_id", "a recipient's opt-ins and opt-outs"),
    ("categories", "categories", None, "notification categories"),
    ("templates", "templates", None, "templates"),
    ("template", "template", "name", "one template with its versions"),
    ("analytics", "analytics", None, "GET counts and rates per template, version, variant, channel and day"),
    ("credentials", "credentials", None, "the app's own provider credentials (admin scope)"),
    ("oauth_token", "oauth-token", None, "POST an OAuth2 client's id and secret for an access token "
                                         "(client credentials grant)"),
    ("schema", "schema", None, "the OpenAPI 3 schema (JSON with ?format=json)"),
    ("docs", "docs", None, "Swagger UI"),
    ("redoc", "redoc", None, "ReDoc"),
    ("health_live", "health-live", None, "liveness"),
    ("health_ready", "health-ready", None, "readiness of PostgreSQL, RabbitMQ and Redis"),
]
#: A value each path converter accepts, replaced by ``{variable}`` after reversing.
_PLACEHOLDERS = {"notification_id": "00000000-0000-0000-0000-000000000000", "external_id": "VARIABLE",
                 "name": "VARIABLE", "broadcast_id": 987654321}


def _link(request, url_name: str, variable: str | None) -> str:
    """The absolute URL of ``url_name``, its path variable (if any) written as ``{variable}``."""
    if variable is None:
        return request.build_absolute_uri(reverse(url_name))
    placeholder = _PLACEHOLDERS[variable]
    url = request.build_absolute_uri(reverse(url_name, kwargs={variable: placeholder}))
    return url.replace(str(placeholder), "{" + variable + "}")


class ApiRootView(APIView):
    """``GET /api/v1/``: ``{"name", "version", "links": {name: {"href", "title"}}}``; no API
    key needed (the links are public knowledge; every resource asks for its key)."""

    authentication_classes: list = []
    permission_classes: list = []

    @extend_schema(tags=["root"], summary="API root: links to every resource and the documentation", responses={
        200: OpenApiResponse(inline_serializer("ApiRoot", {
            "name": serializers.CharField(), "version": serializers.CharField(),
            "links": serializers.DictField(child=inline_serializer("Link", {
                # Not a URLField: with a path variable it is an RFC 6570 URI template, whose
                # braces no URI may hold (the schema's `format: uri` failed the real answer).
                "href": serializers.CharField(help_text="absolute URL, or a URI template (RFC 6570) where "
                                                        "`{x}` marks a path variable"),
                "title": serializers.CharField()}))}),
            examples=[OpenApiExample("root", {"name": "notify API", "version": "1.0.0", "links": {
                "notifications": {"href": "http://127.0.0.1:8000/api/v1/notifications", "title": "POST a send"},
                "recipient": {"href": "http://127.0.0.1:8000/api/v1/recipients/{external_id}",
                              "title": "PUT / GET a recipient"},
                "docs": {"href": "http://127.0.0.1:8000/api/v1/docs", "title": "Swagger UI"}}})])})
    def get(self, request):
        from django.conf import settings

        links = {name: {"href": _link(request, url_name, variable), "title": title}
                 for name, url_name, variable, title in LINKS}
        return Response({"name": settings.SPECTACULAR_SETTINGS["TITLE"],
                         "version": settings.SPECTACULAR_SETTINGS["VERSION"], "links": links})


class SchemaView(SpectacularAPIView):
    """The OpenAPI schema, generated one request at a time per process.

    drf-spectacular resolves its extension classes lazily on the first generation, without a
    lock: concurrent first requests under gunicorn's threads answered 500
    (``ModuleNotFoundError``/``AttributeError`` in ``plumbing._load_class``)."""

    authentication_classes: list = []
    permission_classes: list = []
    _lock = threading.Lock()

    def _get_schema_response(self, request):
        with self._lock:
            return super()._get_schema_response(request)


class SwaggerView(SpectacularSwaggerView):
    """Swagger UI on the schema; its scripts, styles and icon come from this service."""

    authentication_classes: list = []
    permission_classes: list = []
    url_name = "schema"


class RedocView(SpectacularRedocView):
    """ReDoc on the schema, with a page that loads no web fonts from elsewhere."""

    authentication_classes: list = []
    permission_classes: list = []
    url_name = "schema"
    template_name = "api_docs/redoc.html"
