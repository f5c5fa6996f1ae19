"""Twilio webhooks: message status callbacks and inbound STOP/START keywords.

Signature: ``X-Twilio-Signature`` = base64(HMAC-SHA1(auth token, URL + sorted POST params)),
checked with the twilio library's RequestValidator (Twilio docs, "Webhooks security").
"""

from __future__ import annotations

from functools import lru_cache

from twilio.request_validator import RequestValidator

from ..channel_config import config_for
from ..models import Delivery, DeliveryLog, Preference, Recipient
from .base import WebhookView

STOP_WORDS = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"}
START_WORDS = {"START", "YES", "UNSTOP"}


@lru_cache(maxsize=1)
def _validator() -> RequestValidator:
    return RequestValidator(config_for("sms")["auth_token"] or "")


class TwilioWebhookView(WebhookView):
    def verify(self, request, url):
        signature = request.headers.get("X-Twilio-Signature", "")
        return bool(signature) and _validator().validate(url, request.POST.dict(), signature)


class TwilioStatusView(TwilioWebhookView):
    """Records the later statuses (sent, delivered, undelivered, failed) in the delivery log;
    error 21610 (the recipient replied STOP) turns into an SMS opt-out."""

    def handle(self, request):
        delivery = Delivery.objects.filter(id=request.GET.get("delivery_id"),
                                           provider_message_id=request.POST.get("MessageSid", "")).first()
        if delivery is None:
            return
        status = request.POST.get("MessageStatus", "")
        code = request.POST.get("ErrorCode", "")
        DeliveryLog.objects.create(delivery=delivery, from_status=delivery.status, to_status=delivery.status,
                                   attempt=delivery.attempts, reason=f"provider:{status}" + (f":{code}" if code else ""),
                                   provider_answer=request.POST.dict())
        if code == "21610":
            Preference.objects.update_or_create(recipient_id=delivery.notification.recipient_id, channel="sms",
                                                category="", defaults={"enabled": False, "source": "sms_stop"})


class TwilioInboundView(TwilioWebhookView):
    """Inbound SMS: STOP-type keywords opt the sender out of SMS, START-type opt back in."""

    def handle(self, request):
        word = request.POST.get("Body", "").strip().upper()
        if word not in STOP_WORDS | START_WORDS:
            return
        for recipient in Recipient.objects.filter(phone=request.POST.get("From", "")):
            Preference.objects.update_or_create(recipient=recipient, channel="sms", category="",
                                                defaults={"enabled": word in START_WORDS, "source": "sms_keyword"})
