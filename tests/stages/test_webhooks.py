"""Provider webhooks (notify.webhooks): one view verifies with the provider's adapter, refuses
replays and reacts to the events the adapter parsed."""

from __future__ import annotations

import pytest
from django.conf import settings
from twilio.request_validator import RequestValidator

from notify import providers
from notify.models import DeliveryLog, Preference

pytestmark = pytest.mark.django_db(transaction=True)


def signed_post(client, path: str, fields: dict, token: str | None = None):
    token = token or providers.config_for("twilio")["auth_token"]
    url = settings.NOTIFY_PUBLIC_URL.rstrip("/") + path
    signature = RequestValidator(token).compute_signature(url, fields)
    return client.post(path, fields, HTTP_X_TWILIO_SIGNATURE=signature)


@pytest.fixture
def sms_delivery(api, ctl):
    api.put("/api/v1/recipients/hook", {"phone": "+14155550150"}, format="json")
    r = api.post("/api/v1/notifications", {"recipient": "hook", "content": {"sms": {"body": "hi"}}}, format="json")
    delivery_id = r.json()["deliveries"][0]["id"]
    from notify import send

    assert send.send(delivery_id) == "sent"
    from notify.models import Delivery

    return Delivery.objects.get(id=delivery_id)


def test_a_signed_status_callback_is_logged_once_and_a_replay_is_refused(client, sms_delivery):
    path = f"/webhooks/twilio/status?delivery_id={sms_delivery.id}"
    fields = {"MessageSid": sms_delivery.provider_message_id, "MessageStatus": "delivered"}
    assert signed_post(client, path, fields).status_code == 204
    assert DeliveryLog.objects.filter(delivery=sms_delivery, reason="provider:delivered").count() == 1
    again = signed_post(client, path, fields)
    assert again.status_code == 409 and again.json()["error"]["code"] == "replayed"
    assert DeliveryLog.objects.filter(delivery=sms_delivery, reason="provider:delivered").count() == 1


def test_a_forged_callback_is_403_and_changes_nothing(client, sms_delivery):
    path = f"/webhooks/twilio/status?delivery_id={sms_delivery.id}"
    fields = {"MessageSid": sms_delivery.provider_message_id, "MessageStatus": "failed", "ErrorCode": "21610"}
    r = signed_post(client, path, fields, token="not-the-auth-token")
    assert r.status_code == 403 and r.json()["error"]["code"] == "invalid_signature"
    assert not DeliveryLog.objects.filter(delivery=sms_delivery, reason__startswith="provider:").exists()
    assert not Preference.objects.exists()


def test_a_21610_callback_opts_the_recipient_out(client, sms_delivery):
    path = f"/webhooks/twilio/status?delivery_id={sms_delivery.id}"
    fields = {"MessageSid": sms_delivery.provider_message_id, "MessageStatus": "failed", "ErrorCode": "21610"}
    assert signed_post(client, path, fields).status_code == 204
    pref = Preference.objects.get(recipient__external_id="hook")
    assert (pref.channel, pref.enabled, pref.source) == ("sms", False, "provider")


def test_inbound_stop_and_start_keywords(client, sms_delivery):
    signed_post(client, "/webhooks/twilio/inbound", {"From": "+14155550150", "Body": " stop "})
    assert Preference.objects.get(recipient__external_id="hook").enabled is False
    signed_post(client, "/webhooks/twilio/inbound", {"From": "+14155550150", "Body": "START"})
    pref = Preference.objects.get(recipient__external_id="hook")
    assert (pref.enabled, pref.source) == (True, "twilio_keyword")


def test_unknown_providers_and_kinds_are_404(client, ctl):
    assert client.post("/webhooks/nobody/status", {}).status_code == 404
    assert client.post("/webhooks/twilio/nothing", {}).status_code == 404
    assert client.post("/webhooks/apns/status", {}).status_code == 404  # APNs calls no webhook


def test_a_signed_callback_about_no_delivery_of_ours_changes_nothing(client, sms_delivery):
    r = signed_post(client, "/webhooks/twilio/status?delivery_id=not-a-uuid",
                    {"MessageSid": sms_delivery.provider_message_id, "MessageStatus": "delivered"})
    assert r.status_code == 204
    assert not DeliveryLog.objects.filter(reason__startswith="provider:").exists()
