"""REST API v1 views. Authentication: ``Authorization: Api-Key <key>`` (see notify.api.auth)."""

from __future__ import annotations

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Prefetch
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.utils.decorators import method_decorator
from django_ratelimit.decorators import ratelimit
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers as drf_serializers
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from channels import registry

from .. import accept, bulk, preferences, privacy, scopes, store, validators
from ..errors import SendRejected
from ..models import Category, DeliveryEvent, Device, Notification, Recipient
from . import serializers as s
from .auth import rate_limit_bucket
from .errors import error_body, flatten


def _api_key_group(group, request):
    return rate_limit_bucket(request.META.get("HTTP_AUTHORIZATION", ""))


def _api_rate(group, request):
    # Read per request (a dict look-up), so a test or a settings override changes it in place.
    return settings.NOTIFY_API_RATE_LIMIT


class AcceptedDelivery(drf_serializers.Serializer):
    id = drf_serializers.UUIDField()
    channel = drf_serializers.CharField()
    to = drf_serializers.CharField(allow_null=True)
    status = drf_serializers.ChoiceField(["queued", "retrying", "suppressed", "standby", "scheduled"])
    reason = drf_serializers.CharField(allow_null=True)
    step = drf_serializers.IntegerField(required=False, help_text="with a fallback: the delivery's step (0 first); "
                                                                  "`standby` ones wait for the steps before")
    scheduled_for = drf_serializers.DateTimeField(
        required=False, help_text="a `scheduled` delivery's release: its `send_at` (reason `scheduled`) or the end "
                                  "of the recipient's quiet hours (reason `quiet_hours`)")
    content_info = drf_serializers.DictField(
        required=False, help_text="What the channel reports about this content, when it has something to "
                                  "say: for SMS `encoding` (`GSM-7` or `UCS-2`) and `segments` (each billed)")


class AcceptedTemplate(drf_serializers.Serializer):
    name = drf_serializers.CharField()
    version = drf_serializers.IntegerField()
    locale = drf_serializers.CharField()
    variant = drf_serializers.CharField(allow_null=True)


class Accepted(drf_serializers.Serializer):
    id = drf_serializers.UUIDField()
    event_id = drf_serializers.CharField(allow_null=True)
    deliveries = AcceptedDelivery(many=True)
    template = AcceptedTemplate(required=False, help_text="for a send by template: the version, locale and A/B "
                                                          "variant it used")


#: The ``Idempotency-Key`` header's form in the OpenAPI schema (notify.validators.idempotency_key).
IDEMPOTENCY_KEY_SCHEMA = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x21-\\x7E]+$"}
IDEMPOTENCY_KEY_HEADER = OpenApiParameter(
    "Idempotency-Key", type=IDEMPOTENCY_KEY_SCHEMA,
    location=OpenApiParameter.HEADER, required=False,
    description="Makes the send idempotent (a retry with the same key and body answers the first response; "
                "another body is a 409). 1 to 255 visible ASCII characters; takes precedence over `event_id`.")


def idempotency_key_header(request) -> str | None:
    """The request's ``Idempotency-Key`` header, or None without one.

    Raises:
        ValidationError: the header is present but not 1-255 visible ASCII characters.
    """
    value = request.headers.get("Idempotency-Key")
    if value is None:
        return None
    try:
        return validators.idempotency_key(value)
    except drf_serializers.ValidationError as exc:
        raise drf_serializers.ValidationError({"Idempotency-Key": exc.detail}) from None


def _idempotency_header_refused(endpoint: str, item: str) -> Response:
    """400 ``idempotency_key_not_supported`` for an ``Idempotency-Key`` header on a many-item
    endpoint: silently ignoring it would let a client believe its retries are deduplicated, when
    each ``item``'s ``event_id`` is that item's idempotency key."""
    return Response(error_body(
        "idempotency_key_not_supported",
        f"the {endpoint} endpoint does not take an Idempotency-Key header: give each {item} its own event_id, "
        f"which is that {item}'s idempotency key",
        {"Idempotency-Key": [f"not supported here; set event_id on each {item}"]}), status=400)


class NotificationListView(APIView):
    """``POST /api/v1/notifications``: accept one notification for one recipient (202)."""

    required_scope = scopes.SEND
    counts_as_send = True  # its refusals count in notify_notifications_refused (notify.metrics)

    @extend_schema(request=s.SendSerializer, parameters=[IDEMPOTENCY_KEY_HEADER],
                   responses={202: Accepted, 400: OpenApiResponse(description="invalid"),
                              404: OpenApiResponse(description="unknown recipient or template"),
                              409: OpenApiResponse(description="idempotency key reused")})
    @method_decorator(ratelimit(key=_api_key_group, rate=_api_rate, block=True))
    def post(self, request):
        header_key = idempotency_key_header(request)
        serializer = s.SendSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        payload = dict(serializer.validated_data)
        event_id = payload.pop("event_id", None)
        key = header_key if header_key is not None else event_id
        accepted = accept.submit(request.user.app_id, request.user.api_key_id, payload, key)
        headers = {"Idempotent-Replayed": "true"} if accepted.replayed else {}
        return Response(accepted.body, status=status.HTTP_202_ACCEPTED, headers=headers)


class AcceptedBatch(drf_serializers.Serializer):
    # Not "Batch": drf-spectacular names components after the serializer minus "Serializer", so
    # that would collide with the request's BatchSerializer and the 202 would show the request.
    notifications = Accepted(many=True)


class NotificationBatchView(APIView):
    """``POST /api/v1/notifications/batch``: accept up to 500 notifications in one call, all or
    none (202, or 400 ``batch_rejected`` with the refused items by index)."""

    required_scope = scopes.SEND
    counts_as_send = True  # its refusals count in notify_notifications_refused (notify.metrics)

    @extend_schema(request=s.BatchSerializer, responses={
        202: AcceptedBatch,
        400: OpenApiResponse(description="refused items, or an Idempotency-Key header (use each item's event_id)")})
    @method_decorator(ratelimit(key=_api_key_group, rate=_api_rate, block=True))
    def post(self, request):
        if "Idempotency-Key" in request.headers:
            return _idempotency_header_refused("batch", "item")
        serializer = s.BatchSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        items = []
        for item in map(dict, serializer.validated_data["notifications"]):
            key = item.pop("event_id", None)
            items.append((item, key))
        accepted = accept.submit_batch(request.user.app_id, request.user.api_key_id, items)
        return Response({"notifications": [a.body for a in accepted]}, status=status.HTTP_202_ACCEPTED)


class BulkAcceptedItem(drf_serializers.Serializer):
    index = drf_serializers.IntegerField(help_text="the item's place in `recipients` (0 first)")
    id = drf_serializers.UUIDField(help_text="its notification (GET /api/v1/notifications/{id} for its deliveries)")
    event_id = drf_serializers.CharField(allow_null=True)
    replayed = drf_serializers.BooleanField(help_text="true: its event_id was accepted before; `id` is that "
                                                      "notification's and nothing new was written")


class BulkError(drf_serializers.Serializer):
    code = drf_serializers.CharField()
    message = drf_serializers.CharField()
    fields = drf_serializers.DictField(child=drf_serializers.ListField(child=drf_serializers.CharField()))


class AcceptedBulk(drf_serializers.Serializer):
    accepted = BulkAcceptedItem(many=True)
    refused = drf_serializers.DictField(child=BulkError(), help_text="`on_invalid: skip` only: each refused "
                                                                      "item's error by its index")


class NotificationBulkView(APIView):
    """``POST /api/v1/notifications/bulk``: one template to up to NOTIFY_BULK_MAX_RECIPIENTS
    recipients, each with its own data and event_id (notify.bulk); 202 with each item's
    notification id, or 400 ``bulk_rejected`` with the refused items by index."""

    required_scope = scopes.SEND
    counts_as_send = True  # its refusals count in notify_notifications_refused (notify.metrics)

    @extend_schema(request=s.BulkSerializer, responses={
        202: AcceptedBulk,
        400: OpenApiResponse(description="`bulk_rejected` (refused items by index in `error.items`), "
                                         "`too_many_recipients`, or an Idempotency-Key header"),
        404: OpenApiResponse(description="unknown template")})
    @method_decorator(ratelimit(key=_api_key_group, rate=_api_rate, block=True))
    def post(self, request):
        if "Idempotency-Key" in request.headers:
            return _idempotency_header_refused("bulk", "recipient")
        raw = request.data.get("recipients") if isinstance(request.data, dict) else None
        limit = settings.NOTIFY_BULK_MAX_RECIPIENTS
        if isinstance(raw, list) and len(raw) > limit:
            raise SendRejected("too_many_recipients", f"{len(raw)} recipients: at most {limit} per call",
                               status=400, fields={"recipients": [f"at most {limit} items"]})
        serializer = s.BulkSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        shared = dict(serializer.validated_data)
        items_in, on_invalid = shared.pop("recipients"), shared.pop("on_invalid")
        items, refused = [], {}
        for index, item in enumerate(items_in):
            try:
                item = s.bulk_item(item)
            except drf_serializers.ValidationError as exc:
                refused[index] = {"code": "invalid_request", "message": "the item has invalid fields",
                                  "fields": flatten(exc.detail)}
                continue
            key = item.pop("event_id", None)
            items.append(bulk.BulkItem(index, {**shared, **item}, key))
        result = bulk.submit_bulk(request.user.app_id, request.user.api_key_id, items, on_invalid, refused)
        return Response({"accepted": result.accepted, "refused": {str(i): e for i, e in result.refused.items()}},
                        status=status.HTTP_202_ACCEPTED)


class CancelledNotification(s.NotificationOut):
    cancelled = drf_serializers.ListField(child=drf_serializers.UUIDField(),
                                          help_text="the deliveries this call cancelled")
    not_cancelled = drf_serializers.ListField(
        child=drf_serializers.DictField(), help_text="the deliveries left as they were (`id`, `channel`, `status`): "
                                                     "already being sent or finished")


class NotificationDetailView(APIView):
    """``GET /api/v1/notifications/<id>``: the notification with each delivery's status;
    ``DELETE``: cancel what of it has not started (notify.store.cancel)."""

    required_scope = scopes.SEND

    def _notification(self, request, notification_id) -> Notification:
        return get_object_or_404(
            Notification.objects.select_related("recipient").prefetch_related(
                "deliveries", Prefetch("deliveries__events", DeliveryEvent.objects.order_by("occurred_at", "id"))),
            id=notification_id, app_id=request.user.app_id)

    @extend_schema(responses=s.NotificationOut)
    def get(self, request, notification_id):
        return Response(s.NotificationOut(self._notification(request, notification_id)).data)

    @extend_schema(responses={200: CancelledNotification,
                              404: OpenApiResponse(description="no such notification of this app"),
                              409: OpenApiResponse(description="`not_cancellable`: every delivery has started "
                                                               "or finished")})
    def delete(self, request, notification_id):
        with transaction.atomic():
            cancelled = store.cancel(request.user.app_id, notification_id)
            if cancelled is None:
                raise Http404
            notification = self._notification(request, notification_id)
        if not cancelled:
            raise SendRejected("not_cancellable", "nothing of this notification is left to cancel: every delivery "
                                                  "has started or finished", status=409)
        body = s.NotificationOut(notification).data
        body["cancelled"] = [str(d.id) for d in notification.deliveries.all() if d.id in cancelled]
        body["not_cancelled"] = [{"id": str(d.id), "channel": d.channel, "status": d.status}
                                 for d in notification.deliveries.all() if d.id not in cancelled]
        return Response(body)


def _recipient(request, external_id) -> Recipient:
    return get_object_or_404(Recipient, app_id=request.user.app_id, external_id=external_id)


def _find_recipient(app_id: int, external_id: str) -> Recipient | None:
    return Recipient.objects.filter(app_id=app_id, external_id=external_id).first()


class RecipientScopedView(APIView):
    """Base of every ``/recipients/<external_id>/...`` view: refuses, with 400 before any query,
    an ``external_id`` no recipient can have (NUL, which PostgreSQL refuses in text, other
    control characters, or more than the column's 255 characters; each was a 500)."""

    required_scope = scopes.RECIPIENTS
    checks_path = True  # its operations document that 400 (notify.api.docs)

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)  # authentication first: a 401 stays a 401
        try:
            validators.external_id(kwargs["external_id"])
        except drf_serializers.ValidationError as exc:
            raise drf_serializers.ValidationError({"external_id": exc.detail}) from None


class RecipientView(RecipientScopedView):
    """``PUT /api/v1/recipients/<external_id>`` creates or updates; ``GET`` reads."""

    @extend_schema(responses=s.RecipientSerializer)
    def get(self, request, external_id):
        return Response(s.RecipientSerializer(_recipient(request, external_id)).data)

    @extend_schema(request=s.RecipientSerializer, responses=s.RecipientSerializer)
    def put(self, request, external_id):
        app_id = request.user.app_id
        recipient = _find_recipient(app_id, external_id)
        if recipient is None:
            serializer = s.RecipientSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            try:
                # A savepoint, so that losing the race does not break an enclosing transaction.
                with transaction.atomic():
                    recipient = serializer.save(app_id=app_id, external_id=external_id)
                return Response(s.RecipientSerializer(recipient).data, status=201)
            except IntegrityError:
                # A concurrent PUT of the same new id committed first: apply this one as the
                # update it would have been had it arrived a moment later.
                recipient = _find_recipient(app_id, external_id)
                if recipient is None:
                    raise
        serializer = s.RecipientSerializer(recipient, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        recipient = serializer.save()
        return Response(s.RecipientSerializer(recipient).data, status=200)


class DeviceListView(RecipientScopedView):
    """``POST /api/v1/recipients/<external_id>/devices`` registers (or re-activates) a device."""

    @extend_schema(responses=s.DeviceSerializer(many=True))
    def get(self, request, external_id):
        devices = Device.objects.filter(recipient=_recipient(request, external_id)).order_by("id")
        return Response(s.DeviceSerializer(devices, many=True).data)

    @extend_schema(request=s.DeviceSerializer, responses=s.DeviceSerializer)
    def post(self, request, external_id):
        recipient = _recipient(request, external_id)
        serializer = s.DeviceSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        device, created = Device.objects.update_or_create(
            app_id=request.user.app_id, platform=data["platform"], token=data["token"],
            defaults={"recipient": recipient, "subscription": data.get("subscription"), "active": True,
                      "deactivated_reason": ""})
        return Response(s.DeviceSerializer(device).data, status=201 if created else 200)


class DeviceDetailView(RecipientScopedView):
    """``DELETE /api/v1/recipients/<external_id>/devices/<id>`` removes a device."""

    @extend_schema(responses={204: None})
    def delete(self, request, external_id, device_id):
        device = get_object_or_404(Device, id=device_id, recipient=_recipient(request, external_id))
        device.delete()
        return Response(status=204)


class PreferenceView(RecipientScopedView):
    """``GET``/``PUT /api/v1/recipients/<external_id>/preferences``: opt-ins and opt-outs.

    PUT body: ``{"preferences": [{"channel": "sms", "category": "", "enabled": false}]}``;
    a content group (``channel: "push"``) sets each of its channels.
    """

    @extend_schema(responses=s.PreferenceListSerializer)
    def get(self, request, external_id):
        return Response({"preferences": s.preferences_out(_recipient(request, external_id))})

    @extend_schema(request=s.PreferenceListSerializer, responses=s.PreferenceListSerializer)
    def put(self, request, external_id):
        recipient = _recipient(request, external_id)
        serializer = s.PreferenceListSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        items = serializer.validated_data["preferences"]
        # A required category (a sign-in code) cannot be left; nothing is written when one is asked.
        leaving = {item["category"] for item in items if item["category"] and not item["enabled"]}
        required = sorted(Category.objects.filter(app_id=request.user.app_id, name__in=leaving, required=True)
                          .values_list("name", flat=True))
        if required:
            refused = {f"preferences.{i}.category": [f"{item['category']!r} is required: recipients cannot opt out"]
                       for i, item in enumerate(items) if item["category"] in required and not item["enabled"]}
            raise SendRejected("category_required", f"required categories cannot be opted out of: "
                                                    f"{', '.join(required)}", status=400, fields=refused)
        with transaction.atomic():
            for item in items:
                name = item["channel"]
                channels = (name,) if name in registry.channels() else registry.channels_in_group(name)
                store.set_preferences([recipient.id], channels, item["category"], item["enabled"], "api")
        return Response({"preferences": s.preferences_out(recipient)})


class PreferenceLink(drf_serializers.Serializer):
    url = drf_serializers.URLField(help_text="the recipient's preference page: no account needed")
    expires_at = drf_serializers.DateTimeField(help_text="the link is refused after this (410)")


class PreferenceLinkView(RecipientScopedView):
    """``GET /api/v1/recipients/<external_id>/preference-link``: a signed link to the
    recipient's hosted preference page (notify.preferences), valid for
    ``NOTIFY_PREFERENCE_LINK_MAX_AGE`` seconds, for an app to show in its own settings."""

    @extend_schema(responses=PreferenceLink)
    def get(self, request, external_id):
        url, expires_at = preferences.link(request.user.app_id, _recipient(request, external_id).id)
        return Response(PreferenceLink({"url": url, "expires_at": expires_at}).data)


class ErasedRecipient(drf_serializers.Serializer):
    external_id = drf_serializers.CharField(help_text="the id erased: free again for a new recipient")
    erased_at = drf_serializers.DateTimeField()
    devices = drf_serializers.IntegerField(help_text="devices deleted (tokens, Web Push endpoints and keys)")
    preferences = drf_serializers.IntegerField(help_text="preference rows deleted")
    notifications = drf_serializers.IntegerField(help_text="notifications kept for the counts, their data and "
                                                           "content removed")
    deliveries = drf_serializers.IntegerField(help_text="deliveries kept for the counts (status, channel, times), "
                                                        "their addresses and provider answers removed")
    cancelled = drf_serializers.ListField(child=drf_serializers.UUIDField(),
                                          help_text="the deliveries that had not started, now `cancelled`")
    sending = drf_serializers.IntegerField(help_text="deliveries a worker was handing to a provider at that "
                                                     "instant: they cannot be called back")


class RecipientEraseView(RecipientScopedView):
    """``POST /api/v1/recipients/<external_id>/erase``: erase the recipient's personal data
    (notify.privacy); no body."""

    @extend_schema(
        request=None, summary="Erase a recipient's personal data",
        description="In one transaction: the recipient's name, email, phone, locale, time zone and quiet hours, "
                    "its devices and preferences are deleted; its notifications and deliveries are kept for "
                    "counts and analytics (status, channel, template, variant, times, provider message id) with "
                    "their addresses, provider answers, data and content removed; deliveries not started yet "
                    "(`scheduled`, `queued`, `retrying`, `standby`) are cancelled, as `DELETE "
                    "/api/v1/notifications/{id}` does. The external id is free at once: a `PUT` creates a new, "
                    "empty recipient. Calling it again answers 404, as for an unknown recipient.",
        responses={200: ErasedRecipient,
                   404: OpenApiResponse(description="`not_found`: no such recipient in this app (another app's, "
                                                    "an unknown one, or one erased already)")})
    def post(self, request, external_id):
        erasure = privacy.erase(request.user.app_id, external_id)
        if erasure is None:
            raise Http404
        return Response(ErasedRecipient(erasure).data)
