"""The broadcasts API (``/api/v1/broadcasts``): one template sent to a segment of the app's
recipients, fanned out in the background (notify.broadcast), with its progress and a cancel.
Needs the ``send`` scope, as sending does."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import broadcast as fan, scopes, validators
from ..errors import SendRejected
from ..models import Broadcast
from .serializers import CHANNEL_CHOICES, StorableJSONObject, StrictBooleanField, StrictSerializer, external_id_field
from .template_serializers import ApiError
from .views import IDEMPOTENCY_KEY_SCHEMA, idempotency_key_header

SEGMENT_KEYS = ("locale", "tags", "tags_match", "external_ids", "all")

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key", type=IDEMPOTENCY_KEY_SCHEMA,
    location=OpenApiParameter.HEADER, required=False,
    description="Makes the call idempotent: a retry with the same key and body answers the broadcast the first "
                "call created (`Idempotent-Replayed: true`, its current status) and starts nothing; another body "
                "is a 409. 1 to 255 visible ASCII characters, kept as long as the broadcast.")


class SegmentIn(serializers.Serializer):
    """Who a broadcast goes to: the given filters, ANDed; ``all: true`` alone for every recipient."""

    locale = serializers.CharField(max_length=35, required=False,
                                   help_text="recipients with this locale or a sub-tag of it (`ko` takes `ko-KR`); "
                                             "case-insensitive")
    tags = serializers.ListField(child=serializers.CharField(), required=False, allow_empty=False,
                                 help_text="recipient tags; see `tags_match`")
    tags_match = serializers.ChoiceField(["any", "all"], required=False, default="any",
                                         help_text="`any` (default): a recipient with at least one of `tags`; "
                                                   "`all`: with every one")
    external_ids = serializers.ListField(child=external_id_field(), required=False,
                                         allow_empty=False, max_length=settings.NOTIFY_BROADCAST_MAX_IDS,
                                         help_text=f"these recipients (at most {settings.NOTIFY_BROADCAST_MAX_IDS}; "
                                                   "unknown ids are skipped)")
    all = StrictBooleanField(required=False, help_text="`true`: every recipient of the app (no other key)")

    def validate_tags(self, value):
        return validators.tags(value)

    def to_internal_value(self, data):
        unknown = set(data) - set(SEGMENT_KEYS) if isinstance(data, dict) else set()
        if unknown:
            raise serializers.ValidationError({str(key): ["unknown segment key"] for key in sorted(map(str, unknown))})
        return super().to_internal_value(data)

    def validate(self, attrs):
        filters = [key for key in ("locale", "tags", "external_ids") if key in attrs]
        if attrs.get("all"):
            if filters:
                raise serializers.ValidationError({"all": [f"all: true takes no other filter ({', '.join(filters)})"]})
        elif not filters:
            raise serializers.ValidationError({"all": ["give a filter (locale, tags, external_ids) or all: true"]},
                                              code="no_filter")
        if "all" in attrs and not attrs["all"]:
            attrs.pop("all")
        if "tags" not in attrs:
            attrs.pop("tags_match", None)
        return attrs


class BroadcastIn(StrictSerializer):
    """A broadcast's body. An unknown field is a 400: a send's option a broadcast does not have
    (``send_at``, ``fallback``) would otherwise be dropped silently and the broadcast go at once."""

    template = serializers.SlugField(max_length=100)
    template_version = serializers.IntegerField(min_value=1, required=False,
                                                help_text="a published version (default: the latest); pinned at "
                                                          "creation")
    data = StorableJSONObject(required=False, help_text="the template's variables, the same for every recipient")
    channels = serializers.ListField(child=serializers.ChoiceField(CHANNEL_CHOICES), required=False,
                                     allow_empty=False, max_length=len(CHANNEL_CHOICES),
                                     help_text="default: every channel the template has content for")
    category = serializers.SlugField(max_length=64, required=False)
    priority = serializers.ChoiceField(["high", "normal"], required=False)
    ttl = serializers.IntegerField(min_value=1, max_value=28 * 24 * 3600, required=False)
    segment = SegmentIn()

    def validate_channels(self, value):
        if len(set(value)) != len(value):
            raise serializers.ValidationError("a channel is listed twice")
        return value


class BroadcastOut(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(["created", "running", "done", "cancelled"],
                                     help_text="the fan-out's: `done` once every recipient is written, while "
                                               "deliveries may still be sending (see `pending`)")
    template = serializers.CharField()
    template_version = serializers.IntegerField()
    category = serializers.CharField()
    segment = serializers.DictField()
    total = serializers.IntegerField(help_text="recipients in the segment at creation")
    written = serializers.IntegerField(help_text="recipients whose notification is written")
    queued = serializers.IntegerField(help_text="deliveries put in the outbox")
    sent = serializers.IntegerField(help_text="deliveries the provider accepted (receipts included)")
    failed = serializers.IntegerField(help_text="deliveries failed, expired or dead-lettered")
    suppressed = serializers.IntegerField(help_text="deliveries suppressed (opted out, muted, rate limited...)")
    cancelled = serializers.IntegerField(help_text="deliveries cancelled")
    pending = serializers.IntegerField(help_text="deliveries not final yet")
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True, help_text="when the fan-out ended (done or cancelled)")
    cancelled_at = serializers.DateTimeField(allow_null=True)


def _out(broadcast: Broadcast) -> dict:
    progress = fan.progress(broadcast)
    return BroadcastOut({
        "id": broadcast.id, "status": broadcast.status, "template": broadcast.template.name,
        "template_version": broadcast.template_version, "category": broadcast.category, "segment": broadcast.segment,
        **{k: getattr(progress, k) for k in ("total", "written", "queued", "sent", "failed", "suppressed",
                                              "cancelled", "pending")},
        "created_at": broadcast.created_at, "finished_at": broadcast.finished_at,
        "cancelled_at": broadcast.cancelled_at}).data


class BroadcastAccepted(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    total = serializers.IntegerField()


class BroadcastListView(APIView):
    """``POST /api/v1/broadcasts`` starts a broadcast (202); ``GET`` lists the app's, newest first."""

    required_scope = scopes.SEND

    @extend_schema(request=BroadcastIn, parameters=[IDEMPOTENCY_KEY], responses={
        202: BroadcastAccepted,
        400: OpenApiResponse(ApiError, description="invalid request or segment, or `missing_variables`"),
        404: OpenApiResponse(ApiError, description="`template_not_found`, `template_version_not_found`"),
        409: OpenApiResponse(ApiError, description="`idempotency_key_reused`: the key's broadcast had another body"),
        422: OpenApiResponse(ApiError, description="`empty_segment` (no recipient matches), `template_error`, "
                                                   "or content a provider would refuse")})
    def post(self, request):
        key = idempotency_key_header(request)
        serializer = BroadcastIn(data=request.data)
        serializer.is_valid(raise_exception=True)
        with transaction.atomic():
            created, replayed = fan.create(request.user.app_id, dict(serializer.validated_data), key)
        return Response({"id": created.id, "status": created.status, "total": created.total}, status=202,
                        headers={"Idempotent-Replayed": "true"} if replayed else {})

    @extend_schema(responses=BroadcastOut(many=True))
    def get(self, request):
        rows = Broadcast.objects.filter(app_id=request.user.app_id).select_related("template").order_by("-id")[:100]
        return Response([_out(b) for b in rows])


class BroadcastDetailView(APIView):
    """``GET /api/v1/broadcasts/<id>``: a broadcast with its progress."""

    required_scope = scopes.SEND

    @extend_schema(responses=BroadcastOut)
    def get(self, request, broadcast_id):
        return Response(_out(get_object_or_404(Broadcast.objects.select_related("template"),
                                               pk=broadcast_id, app_id=request.user.app_id)))


class BroadcastCancelView(APIView):
    """``POST /api/v1/broadcasts/<id>/cancel``: stop the fan-out and cancel the deliveries not
    yet started, also once the fan-out is done; 409 ``not_cancellable`` when it is cancelled
    already, or done with no delivery left to cancel."""

    required_scope = scopes.SEND

    @extend_schema(request=None, responses={200: BroadcastOut, 409: OpenApiResponse(
        ApiError, description="`not_cancellable`: cancelled already, or done with nothing left to cancel")})
    def post(self, request, broadcast_id):
        found = get_object_or_404(Broadcast, pk=broadcast_id, app_id=request.user.app_id)
        cancelled = fan.cancel(request.user.app_id, found.id)
        found.refresh_from_db()
        if cancelled is None:
            why = ("cancelled already" if found.status == "cancelled"
                   else f"{found.status}, with no delivery left to cancel")
            raise SendRejected("not_cancellable", f"the broadcast is {why}", status=409)
        return Response(_out(found))
