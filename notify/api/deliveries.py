"""``POST /api/v1/deliveries/<id>/opened``: an app reports that its recipient opened a push message.

Apps get the delivery id in the push payload (``notify_delivery_id`` in APNs and FCM data, in
the Web Push JSON) and report the open from their backend with their API key; a Web Push
service worker, which holds no key, uses the payload's signed ``open_url`` instead
(notify.tracking_views.push_open). Either way the event is recorded through notify.receipts:
once per delivery, so a repeated report answers ``recorded: false`` and changes nothing.
"""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import receipts, scopes
from ..errors import SendRejected
from ..models import REACHED_PROVIDER, Delivery, DeliveryStatus
from .template_serializers import ApiError

#: Statuses a delivery can be opened in: its provider took it (``sending``: the worker has not
#: written the provider's answer yet; the event is adopted when it does).
OPENABLE = REACHED_PROVIDER | {DeliveryStatus.SENDING}


class DeliveryOpened(serializers.Serializer):
    """The answer to an open report: the delivery, whether this report recorded the event, and
    the delivery's status after it."""

    delivery_id = serializers.UUIDField()
    event = serializers.CharField(help_text="`opened`")
    recorded = serializers.BooleanField(help_text="false: an open of this delivery was already recorded "
                                                  "(nothing changed)")
    status = serializers.CharField(help_text="the delivery's status after the report (`opened`, or a higher one "
                                             "it already had: `clicked`, `complained`)")


_EXAMPLE_ID = "0d6c5c5e-4f0e-4d3b-9a51-2f3c9f1b7a10"


class DeliveryOpenedView(APIView):
    """``POST /api/v1/deliveries/<id>/opened`` (no body)."""

    required_scope = scopes.SEND

    @extend_schema(
        request=None, summary="Report that the recipient opened a delivery (push)",
        description="Records the delivery's `opened` event once; a repeat answers 200 with `recorded: false`. "
                    "Only the app's own deliveries (another's is a 404).",
        responses={
            200: OpenApiResponse(DeliveryOpened, examples=[
                OpenApiExample("first report", {"delivery_id": _EXAMPLE_ID, "event": "opened", "recorded": True,
                                                "status": "opened"}),
                OpenApiExample("repeated report", {"delivery_id": _EXAMPLE_ID, "event": "opened",
                                                   "recorded": False, "status": "opened"})]),
            404: OpenApiResponse(ApiError, description="`not_found`: no such delivery of this app"),
            # The error example is made from the `code` the description names (notify.api.docs).
            409: OpenApiResponse(ApiError, description="`not_sent`: the delivery never reached its provider "
                                                       "(suppressed, failed, still queued...)")})
    def post(self, request, delivery_id):
        row = Delivery.objects.filter(id=delivery_id, notification__app_id=request.user.app_id) \
            .values_list("status", flat=True).first()
        if row is None:
            raise Http404
        if row not in OPENABLE:
            raise SendRejected("not_sent", f"the delivery was not sent (status {row})", status=409)
        outcome = receipts.record(delivery_id, "opened", source="api")
        if outcome is None:  # deleted in between
            raise Http404
        status = "opened" if outcome.moved else outcome.status
        return Response(DeliveryOpened({"delivery_id": delivery_id, "event": "opened", "recorded": outcome.recorded,
                                        "status": status}).data)
