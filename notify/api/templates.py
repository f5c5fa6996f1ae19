"""The templates API (``/api/v1/templates``): create, read, version, publish, archive and preview
an app's templates. Authentication as for the rest of the API; every look-up is scoped to the
caller's app, so another app's template is a 404 like a missing one.

Content changes only by adding a version: a published version never changes (the model refuses
it), a draft becomes usable by sends once published. Writes go through ``Model.save()``, whose
signals drop the template's entries in the Redis cache (notify.cache), so the very next send
sees a newly published version or an archived template.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import Max, Q
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from jinja2 import TemplateError
from rest_framework import serializers as drf_serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import cache, scopes
from ..errors import SendRejected
from ..models import Template, TemplateVersion
from ..preview import PreviewError, preview
from . import template_serializers as ts


class TemplateRefused(SendRejected):
    """A templates-API request that cannot be served; answered like SendRejected by
    notify.api.errors.exception_handler (``{"error": {"code", "message", "fields"}}``)."""


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ts.ApiError, description=description)


INVALID = _error("`invalid_request`: invalid fields, by path (e.g. `content.en.sms.body`); nothing is written")
NOT_FOUND = _error("`template_not_found`: no such template in this app")
VERSION_NOT_FOUND = _error("`template_not_found`, `template_version_not_found`")
ARCHIVED = _error("`template_archived`: an archived template cannot change")


# --- look-ups and shapes -----------------------------------------------------------------------

def _template(request, name: str, lock: bool = False) -> Template:
    rows = Template.objects.filter(app_id=request.user.app_id, name=name)
    template = (rows.select_for_update() if lock else rows).first()
    if template is None:
        raise TemplateRefused("template_not_found", f"no template named {name!r}", status=404,
                              fields={"name": ["not found"]})
    return template


def _writable(request, name: str) -> Template:
    """The template, locked for the rest of the transaction (which serialises version numbers
    and publishing); 409 when archived."""
    template = _template(request, name, lock=True)
    if template.archived_at is not None:
        raise TemplateRefused("template_archived", f"template {name!r} is archived", status=409,
                              fields={"name": ["archived"]})
    return template


def _version(template: Template, number: int) -> TemplateVersion:
    version = template.versions.filter(number=number).first()
    if version is None:
        raise TemplateRefused("template_version_not_found", f"template {template.name!r} has no version {number}",
                              status=404, fields={"version": ["not found"]})
    return version


def _version_out(template: Template, version: TemplateVersion) -> dict:
    return ts.VersionOut({"template": template.name, "number": version.number, "published_at": version.published_at,
                          "created_at": version.created_at, "locales": list(version.content or {}),
                          "content": version.content or {}, "variants": version.variants or []}).data


def _summary(template: Template, versions: list[TemplateVersion]) -> dict:
    published = [v.number for v in versions if v.published_at is not None]
    return {"name": template.name, "category": template.category, "default_locale": template.default_locale,
            "truncate_push": template.truncate_push, "archived": template.archived_at is not None,
            "archived_at": template.archived_at, "latest_published": max(published, default=None),
            "latest_version": max((v.number for v in versions), default=None),
            "created_at": template.created_at, "updated_at": template.updated_at}


def _template_out(template: Template, serializer=ts.TemplateOut, **extra) -> dict:
    versions = list(template.versions.order_by("number"))
    body = {**_summary(template, versions), **extra,
            "versions": [{"number": v.number, "published_at": v.published_at, "created_at": v.created_at,
                          "locales": list(v.content or {}),
                          "variants": [variant.get("name") for variant in v.variants or []]} for v in versions]}
    return serializer(body).data


# --- views -------------------------------------------------------------------------------------

class TemplateListView(APIView):
    """``GET /api/v1/templates`` lists the app's templates; ``POST`` creates one with version 1."""

    required_scope = scopes.TEMPLATES

    @extend_schema(parameters=[OpenApiParameter(
        "archived", bool, description="also list archived templates (default: false)")],
        responses={200: ts.TemplateSummaryOut(many=True), 400: INVALID})
    def get(self, request):
        try:
            archived = drf_serializers.BooleanField().run_validation(request.query_params.get("archived", "false"))
        except drf_serializers.ValidationError as exc:
            raise drf_serializers.ValidationError({"archived": exc.detail}) from None
        rows = Template.objects.filter(app_id=request.user.app_id).annotate(
            latest_published_number=Max("versions__number", filter=Q(versions__published_at__isnull=False)),
            latest_version_number=Max("versions__number")).order_by("name")
        if not archived:
            rows = rows.filter(archived_at__isnull=True)
        return Response(ts.TemplateSummaryOut([{
            "name": t.name, "category": t.category, "default_locale": t.default_locale,
            "truncate_push": t.truncate_push, "archived": t.archived_at is not None, "archived_at": t.archived_at,
            "latest_published": t.latest_published_number, "latest_version": t.latest_version_number,
            "created_at": t.created_at, "updated_at": t.updated_at} for t in rows], many=True).data)

    @extend_schema(request=ts.TemplateCreateIn, responses={
        201: ts.TemplateCreatedOut, 400: INVALID,
        409: _error("`template_exists`: the app has a template of this name (archived ones included)")})
    def post(self, request):
        serializer = ts.TemplateCreateIn(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        app_id = request.user.app_id
        exists = TemplateRefused("template_exists", f"a template named {data['name']!r} exists", status=409,
                                 fields={"name": ["already used by a template of this app"]})
        if Template.objects.filter(app_id=app_id, name=data["name"]).exists():
            raise exists
        try:
            with transaction.atomic():
                template = Template.objects.create(
                    app_id=app_id, name=data["name"], category=data["category"],
                    default_locale=data["default_locale"], truncate_push=data["truncate_push"])
                version = TemplateVersion.objects.create(
                    template=template, number=1, content=data["content"], variants=data["variants"],
                    published_at=timezone.now() if data["publish"] else None)
        except IntegrityError:
            # A concurrent request created the same name first.
            if Template.objects.filter(app_id=app_id, name=data["name"]).exists():
                raise exists from None
            raise
        return Response(_template_out(template, ts.TemplateCreatedOut, version=_version_out(template, version)),
                        status=201)


class TemplateDetailView(APIView):
    """``GET``/``PATCH``/``DELETE /api/v1/templates/<name>``."""

    required_scope = scopes.TEMPLATES

    @extend_schema(responses={200: ts.TemplateOut, 404: NOT_FOUND})
    def get(self, request, name):
        return Response(_template_out(_template(request, name)))

    @extend_schema(request=ts.TemplatePatchIn, responses={
        200: ts.TemplateOut, 400: INVALID, 404: NOT_FOUND, 409: ARCHIVED})
    def patch(self, request, name):
        serializer = ts.TemplatePatchIn(data=request.data)
        serializer.is_valid(raise_exception=True)
        changes = serializer.validated_data
        with transaction.atomic():
            template = _writable(request, name)
            if "default_locale" in changes:
                _check_default_locale(template, changes["default_locale"])
            for field, value in changes.items():
                setattr(template, field, value)
            if changes:
                template.save()
        return Response(_template_out(template))

    @extend_schema(request=None, responses={204: None, 404: NOT_FOUND})
    def delete(self, request, name):
        with transaction.atomic():
            template = _template(request, name, lock=True)
            if template.archived_at is None:
                template.archived_at = timezone.now()
                template.save()
        return Response(status=204)


def _check_default_locale(template: Template, locale: str) -> None:
    """A new default locale must be one of the locales (content and every variant's) of each
    version that is or can become the one sends use: the latest published and the drafts after
    it. Older versions a send pins keep the usual fallback."""
    latest = template.versions.filter(published_at__isnull=False).aggregate(n=Max("number"))["n"] or 0
    lacking = []
    for version in template.versions.filter(Q(number=latest) | Q(number__gt=latest, published_at__isnull=True)):
        sources = [version.content or {}] + [v.get("content") or {} for v in version.variants or []]
        if not all(ts.has_locale(source, locale) for source in sources):
            lacking.append(str(version.number))
    if lacking:
        message = (f"{locale!r} is not a locale of version(s) {', '.join(lacking)} (content or a variant); "
                   "add a version with it first")
        raise drf_serializers.ValidationError({"default_locale": [message]})


class TemplateVersionListView(APIView):
    """``GET /api/v1/templates/<name>/versions`` lists versions; ``POST`` adds one."""

    required_scope = scopes.TEMPLATES

    @extend_schema(responses={200: ts.VersionSummaryOut(many=True), 404: NOT_FOUND})
    def get(self, request, name):
        return Response(_template_out(_template(request, name))["versions"])

    @extend_schema(request=ts.VersionIn, responses={
        201: ts.VersionOut, 400: INVALID, 404: NOT_FOUND, 409: ARCHIVED})
    def post(self, request, name):
        with transaction.atomic():
            template = _writable(request, name)
            serializer = ts.VersionIn(data=request.data, context={"default_locale": template.default_locale})
            serializer.is_valid(raise_exception=True)
            data = serializer.validated_data
            number = (template.versions.aggregate(n=Max("number"))["n"] or 0) + 1
            version = TemplateVersion.objects.create(
                template=template, number=number, content=data["content"], variants=data["variants"],
                published_at=timezone.now() if data["publish"] else None)
        return Response(_version_out(template, version), status=201)


class TemplateVersionDetailView(APIView):
    """``GET /api/v1/templates/<name>/versions/<n>``: one version with its full content."""

    required_scope = scopes.TEMPLATES

    @extend_schema(responses={200: ts.VersionOut, 404: VERSION_NOT_FOUND})
    def get(self, request, name, number):
        template = _template(request, name)
        return Response(_version_out(template, _version(template, number)))


class TemplateVersionPublishView(APIView):
    """``POST /api/v1/templates/<name>/versions/<n>/publish``: publish a draft (idempotent: an
    already published version is answered as it is). The highest published version is the one
    sends use when they pin none."""

    required_scope = scopes.TEMPLATES

    @extend_schema(request=None, responses={200: ts.VersionOut, 404: VERSION_NOT_FOUND, 409: ARCHIVED})
    def post(self, request, name, number):
        with transaction.atomic():
            template = _writable(request, name)
            version = _version(template, number)
            if version.published_at is None:
                version.published_at = timezone.now()
                version.save(update_fields=["published_at"])
        return Response(_version_out(template, version))


class TemplatePreviewView(APIView):
    """``POST /api/v1/templates/<name>/preview``: a version rendered per channel, as a send would
    render it, without sending (notify.preview)."""

    required_scope = scopes.TEMPLATES

    @extend_schema(request=ts.PreviewIn, responses={
        200: ts.PreviewOut,
        400: _error("`invalid_request`; `missing_variables`: every variable the data lacks, in `fields.data`"),
        404: _error("`template_not_found`, `template_version_not_found`, `recipient_not_found`, "
                    "`variant_not_found`"),
        422: _error("`template_error`: the template fails while rendering with this data")})
    def post(self, request, name):
        template = _template(request, name)
        serializer = ts.PreviewIn(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if "version" in data:
            version = _version(template, data["version"])
        else:
            version = template.versions.filter(published_at__isnull=False).order_by("-number").first()
            if version is None:
                raise TemplateRefused("template_version_not_found",
                                      f"template {name!r} has no published version; give a draft's number as version",
                                      status=404, fields={"version": ["no published version"]})
        profile = None
        if "recipient" in data:
            profile = cache.load_profile(request.user.app_id, data["recipient"])
            if profile is None:
                raise TemplateRefused("recipient_not_found", f"no recipient {data['recipient']!r}", status=404,
                                      fields={"recipient": ["not found"]})
        try:
            result = preview(template, version, data.get("data") or {}, profile, data.get("locale"),
                             data.get("variant"))
        except PreviewError as exc:
            if exc.code == "missing_variables":
                raise TemplateRefused(exc.code, str(exc), status=400,
                                      fields={"data": [f"missing: {n}" for n in exc.names]}) from None
            if exc.code == "variant_not_found":
                raise TemplateRefused(exc.code, str(exc), status=404, fields={"variant": ["not found"]}) from None
            raise TemplateRefused(exc.code, str(exc), status=422, fields={"template": [str(exc)]}) from None
        except (TemplateError, TypeError, ArithmeticError, RecursionError) as exc:
            # Compiles, but fails with this data (a call of a non-callable, a division by zero,
            # a macro calling itself): exactly what a preview is for.
            message = f"the template fails to render: {type(exc).__name__}: {exc}"
            raise TemplateRefused("template_error", message, status=422, fields={"template": [message]}) from None
        return Response(ts.PreviewOut(result).data)
