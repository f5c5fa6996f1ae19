"""Twilio webhooks: message status callbacks and inbound STOP/START keywords.

Signature: ``X-Twilio-Signature`` = base64(HMAC-SHA1(auth token, URL + sorted POST params)),
checked with the twilio library's RequestValidator (Twilio docs, "Webhooks security").
"""

from __future__ import annotations

import json
import uuid
from functools import lru_cache

from django.db import connection
from twilio.request_validator import RequestValidator

from channels.twilio_sms import OPT_OUT_CODES

from ..channel_config import config_for
from ..models import Preference, Recipient
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


_STATUS_SQL = """
WITH d AS (
    SELECT d.id, d.status, d.attempts, n.recipient_id FROM notify_delivery d
    JOIN notify_notification n ON n.id = d.notification_id
    WHERE d.id = %s AND d.provider_message_id = %s
), logged AS (
    INSERT INTO notify_deliverylog (delivery_id, at, from_status, to_status, attempt, reason, provider_answer)
    SELECT id, now(), status, status, attempts, %s, %s::jsonb FROM d
)
SELECT recipient_id FROM d
"""


class TwilioStatusView(TwilioWebhookView):
    """Records the later statuses (sent, delivered, undelivered, failed) in the delivery log, in
    one statement (Twilio calls back twice per message, so this is on a hot path too); error
    21610 (the recipient replied STOP) turns into an SMS opt-out."""

    def handle(self, request):
        try:
            delivery_id = str(uuid.UUID(request.GET.get("delivery_id", "")))
        except ValueError:
            return
        status = request.POST.get("MessageStatus", "")
        code = request.POST.get("ErrorCode", "")
        reason = f"provider:{status}" + (f":{code}" if code else "")
        with connection.cursor() as cursor:
            cursor.execute(_STATUS_SQL, [delivery_id, request.POST.get("MessageSid", ""), reason[:128],
                                         json.dumps(request.POST.dict())])
            row = cursor.fetchone()
        if row and code in OPT_OUT_CODES:
            Preference.objects.update_or_create(recipient_id=row[0], channel="sms", category="",
                                                defaults={"enabled": False, "source": "sms_stop"})


class TwilioInboundView(TwilioWebhookView):
    """Inbound SMS: STOP-type keywords opt the sender out of SMS, START-type opt back in."""

    def handle(self, request):
        word = request.POST.get("Body", "").strip().upper()
        if word not in STOP_WORDS | START_WORDS:
            return
        for recipient in Recipient.objects.filter(phone=request.POST.get("From", "")):
            Preference.objects.update_or_create(recipient=recipient, channel="sms", category="",
                                                defaults={"enabled": word in START_WORDS, "source": "sms_keyword"})
