"""Provider events delivered by an Amazon SNS HTTP(S) subscription: ``POST
/webhooks/<provider>/<kind>`` for the kinds an adapter lists in ``sns_webhook_kinds`` (SES's
events at ``/webhooks/ses/events``, those of mail sent through SES's SMTP interface at
``/webhooks/smtp/events``).

Nothing acts on a message before it is checked (notify.webhooks.sns_message, after AWS's
"Verifying the signatures of Amazon SNS messages"): its ``TopicArn`` is a configured one
(``NOTIFY_SNS_TOPIC_ARNS``), it was published within the last hour, its ``SigningCertURL`` (and a
confirmation's ``SubscribeURL``) is https on an SNS host (``NOTIFY_SNS_CERT_HOST_PATTERN``), and
its signature verifies with the certificate found there (fetched over TLS verified against
``NOTIFY_SNS_CA_FILE``, then kept: notify.webhooks.sns_client). A message that fails is answered
403 with a JSON error (``error.code``: ``invalid_signature``, ``untrusted_url``,
``stale_message``, ``unknown_topic``) and changes nothing; SNS retries only 5xx answers and
time-outs, so it is not delivered again.

A checked message, by ``Type``:

- ``SubscriptionConfirmation``: the subscription is confirmed (GET ``SubscribeURL``);
- ``UnsubscribeConfirmation``: logged; the events stop until someone subscribes again;
- ``Notification``: its ``Message`` (JSON) goes to the provider's adapter (``parse_webhook``),
  and each status event the adapter maps to a delivery event is recorded through
  notify.receipts (once per delivery and kind, the status only moving forward). One that
  refuses the channel (an email hard bounce, a complaint) opts out every recipient of the
  delivery's app at the delivery's address, not only the delivery's recipient: the address is
  what will not take mail. A status mapped to no delivery event (an SES soft bounce, a delivery
  delay) is only logged.

SNS delivers at least once: a message id already handled within :data:`REPLAY_WINDOW` is
answered 200 ``{"duplicate": true}`` and changes nothing. A failure of ours (SNS unreachable for
the certificate or the confirmation: 503; anything else: 500) forgets the message id, so SNS's
retry gets through.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging

from django.conf import settings
from django.http import Http404, HttpResponse, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from django_redis import get_redis_connection

from channels import registry
from channels.base import WebhookEvent

from .. import providers, receipts
from ..api.errors import error_body
from ..cache import redis_key
from . import sns_client, sns_message
from .base import _uuid

log = logging.getLogger("notify.webhooks.sns")

#: Seconds a handled SNS message id is remembered: longer than a message is taken
#: (sns_message.MAX_AGE), so no copy of it can be taken twice.
REPLAY_WINDOW = 2 * sns_message.MAX_AGE


def carries_sns(provider: str, kind: str) -> bool:
    """True when ``provider``'s webhooks of ``kind`` arrive through SNS (its adapter's
    ``sns_webhook_kinds``)."""
    return provider in registry.providers() and kind in registry.provider_class(provider).sns_webhook_kinds


def check(message: dict, now: datetime.datetime) -> None:
    """Everything a message must pass before it is acted on (module docstring), cheapest first.

    Raises:
        sns_message.Refused: the message is not taken (403).
        sns_client.Unavailable: the signing certificate could not be fetched (503).
    """
    sns_message.check_topic(message, settings.NOTIFY_SNS_TOPIC_ARNS)
    sns_message.check_fresh(message, now)
    pattern = settings.NOTIFY_SNS_CERT_HOST_PATTERN
    sns_message.check_url(message["SigningCertURL"], pattern, "SigningCertURL")
    if message["Type"] != "Notification":
        sns_message.check_url(message["SubscribeURL"], pattern, "SubscribeURL")
    certificate = sns_client.signing_certificate(message["SigningCertURL"])
    sns_message.check_signature(message, certificate, now)


@method_decorator(csrf_exempt, name="dispatch")
class SNSWebhookView(View):
    """Check, refuse replays, handle by type (module docstring)."""

    http_method_names = ["post"]

    def post(self, request, provider: str, kind: str):
        if not providers.in_use(provider) or not carries_sns(provider, kind):
            raise Http404(f"no {kind} webhook for provider {provider}")
        try:
            message = sns_message.parse(request.body, request.headers.get("x-amz-sns-message-type"))
            check(message, datetime.datetime.now(datetime.timezone.utc))
        except sns_message.Refused as refused:
            log.warning("SNS message refused", extra={"provider": provider, "code": refused.code,
                                                      "detail": refused.detail})
            return JsonResponse(error_body(refused.code, refused.detail), status=refused.status)
        except sns_client.Unavailable as exc:
            log.warning("SNS signing certificate unavailable", extra={"provider": provider, "detail": str(exc)})
            return JsonResponse(error_body("sns_unavailable", "the signing certificate could not be fetched"),
                                status=503)
        redis = get_redis_connection("default")
        seen = redis_key("sns", hashlib.sha256(f"{message['TopicArn']}\n{message['MessageId']}".encode()).hexdigest())
        if not redis.set(seen, 1, nx=True, ex=REPLAY_WINDOW):
            return JsonResponse({"duplicate": True})
        try:
            response = self.handle(provider, kind, message, request.GET.dict())
        except BaseException:
            redis.delete(seen)  # not handled: SNS's retry must get through
            raise
        if response.status_code >= 500:
            redis.delete(seen)
        return response

    def handle(self, provider: str, kind: str, message: dict, query: dict) -> HttpResponse:
        """Act on a checked, first-seen message (module docstring)."""
        about = {"provider": provider, "topic": message["TopicArn"], "sns_message_id": message["MessageId"]}
        if message["Type"] == "SubscriptionConfirmation":
            try:
                sns_client.confirm_subscription(message["SubscribeURL"])
            except sns_client.Unavailable as exc:
                log.warning("SNS subscription not confirmed", extra={**about, "detail": str(exc)})
                return JsonResponse(error_body("sns_unavailable", "the subscription could not be confirmed"),
                                    status=503)
            log.info("SNS subscription confirmed", extra=about)
        elif message["Type"] == "UnsubscribeConfirmation":
            log.warning("SNS subscription ended: no more events from this topic until it is subscribed again",
                        extra=about)
        else:
            try:
                record = json.loads(message["Message"])
            except ValueError:
                record = None
            events = providers.adapter(provider).parse_webhook(kind, record, query)
            if not events:
                log.info("SNS notification without an event of ours", extra=about)
            for event in events:
                react(provider, event)
        return HttpResponse(status=204)


def react(provider: str, event: WebhookEvent) -> None:
    """What the service does with one status event of ``provider`` carried by SNS: a delivery
    event through notify.receipts (which suppresses the address on a hard bounce or a
    complaint); a status that is no delivery event is logged."""
    if event.kind != "status" or not _uuid(event.delivery_id):
        log.info("provider event about no delivery of ours", extra={
            "source": provider, "event": event.status, "delivery_id": event.delivery_id})
        return
    if event.receipt is None:
        # e.g. an SES soft bounce: the mailbox may take mail later; nothing final to record
        log.info("provider event logged only", extra={
            "source": provider, "event": event.status, "delivery_id": event.delivery_id, "reason": event.reason})
        return
    receipts.record(event.delivery_id, event.receipt, event.occurred_at, source=provider,
                    provider_message_id=event.provider_message_id, reason=event.reason or "",
                    data=event.raw, refused=event.refused)
