"""Provider webhooks (notify.webhooks): one view verifies with the provider's adapter, refuses
replays and reacts to the events the adapter parsed."""

from __future__ import annotations

import pytest
from django.conf import settings
from twilio.request_validator import RequestValidator

from notify import providers
from notify.models import Delivery, DeliveryEvent, DeliveryLog, Preference

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


def status_callback(client, delivery, status: str, **extra):
    fields = {"MessageSid": delivery.provider_message_id, "MessageStatus": status, **extra}
    return signed_post(client, f"/webhooks/twilio/status?delivery_id={delivery.id}", fields)


def test_a_signed_delivered_callback_moves_the_delivery_once_and_a_replay_is_refused(client, sms_delivery):
    assert status_callback(client, sms_delivery, "delivered", RawDlrDoneDate="2612041230").status_code == 204
    sms_delivery.refresh_from_db()
    assert sms_delivery.status == "delivered"
    event = DeliveryEvent.objects.get(delivery=sms_delivery)
    assert event.kind == "delivered" and event.data["RawDlrDoneDate"] == "2612041230"
    assert DeliveryLog.objects.filter(delivery=sms_delivery, from_status="sent", to_status="delivered").count() == 1
    again = status_callback(client, sms_delivery, "delivered", RawDlrDoneDate="2612041230")
    assert again.status_code == 409 and again.json()["error"]["code"] == "replayed"
    assert DeliveryEvent.objects.filter(delivery=sms_delivery).count() == 1


def test_callbacks_out_of_order_end_in_the_final_status(client, sms_delivery):
    """Twilio does not promise order: a late ``sent`` or ``sending`` after ``delivered`` changes
    nothing, and the API shows the events in the provider's order."""
    assert status_callback(client, sms_delivery, "delivered").status_code == 204
    assert status_callback(client, sms_delivery, "sending").status_code == 204
    assert status_callback(client, sms_delivery, "sent").status_code == 204
    sms_delivery.refresh_from_db()
    assert sms_delivery.status == "delivered"
    assert sorted(DeliveryEvent.objects.filter(delivery=sms_delivery).values_list("kind", flat=True)) == [
        "delivered", "sent"]
    assert not DeliveryLog.objects.filter(delivery=sms_delivery, to_status="sent", from_status="delivered").exists()


def test_an_undelivered_callback_carries_the_error_code(client, sms_delivery, api):
    assert status_callback(client, sms_delivery, "undelivered", ErrorCode="30005").status_code == 204
    sms_delivery.refresh_from_db()
    assert sms_delivery.status == "undelivered"
    body = api.get(f"/api/v1/notifications/{sms_delivery.notification_id}").json()
    assert body["deliveries"][0]["status"] == "undelivered"
    assert [(e["kind"], e["reason"]) for e in body["deliveries"][0]["events"]] == [("undelivered", "30005")]
    assert not Preference.objects.exists()  # 30005 (unknown handset) is no refusal


def test_a_callback_that_beats_the_workers_outcome_is_adopted_by_it(client, api, ctl):
    """Twilio may call back before the worker has written ``sent``: the event is kept and the
    worker's outcome takes the furthest status reported so far."""
    from notify import store

    api.put("/api/v1/recipients/early", {"phone": "+14155550151"}, format="json")
    r = api.post("/api/v1/notifications", {"recipient": "early", "content": {"sms": {"body": "hi"}}}, format="json")
    delivery_id = r.json()["deliveries"][0]["id"]
    claimed = store.claim(delivery_id)
    Delivery.objects.filter(id=delivery_id).update(provider_message_id="SM" + "e" * 32)
    delivery = Delivery.objects.get(id=delivery_id)
    assert status_callback(client, delivery, "delivered").status_code == 204
    assert Delivery.objects.get(id=delivery_id).status == "sending"  # left to the worker
    assert store.record_outcome(delivery_id, claimed["attempts"], "sent", "", provider="twilio",
                                provider_message_id="SM" + "e" * 32)
    assert Delivery.objects.get(id=delivery_id).status == "delivered"


def test_a_forged_callback_is_403_and_changes_nothing(client, sms_delivery):
    path = f"/webhooks/twilio/status?delivery_id={sms_delivery.id}"
    fields = {"MessageSid": sms_delivery.provider_message_id, "MessageStatus": "failed", "ErrorCode": "21610"}
    r = signed_post(client, path, fields, token="not-the-auth-token")
    assert r.status_code == 403 and r.json()["error"]["code"] == "invalid_signature"
    assert not DeliveryEvent.objects.exists()
    sms_delivery.refresh_from_db()
    assert sms_delivery.status == "sent"
    assert not Preference.objects.exists()


def test_a_21610_callback_opts_the_recipient_out(client, sms_delivery):
    path = f"/webhooks/twilio/status?delivery_id={sms_delivery.id}"
    fields = {"MessageSid": sms_delivery.provider_message_id, "MessageStatus": "failed", "ErrorCode": "21610"}
    assert signed_post(client, path, fields).status_code == 204
    pref = Preference.objects.get(recipient__external_id="hook")
    assert (pref.channel, pref.enabled, pref.source) == ("sms", False, "provider")
    sms_delivery.refresh_from_db()
    assert (sms_delivery.status, sms_delivery.events.get().reason) == ("undelivered", "21610")


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
    other = signed_post(client, f"/webhooks/twilio/status?delivery_id={sms_delivery.id}",
                        {"MessageSid": "SM" + "0" * 32, "MessageStatus": "delivered"})
    assert other.status_code == 204  # signed by Twilio, but about another message: nothing moves
    assert not DeliveryEvent.objects.exists()
    sms_delivery.refresh_from_db()
    assert sms_delivery.status == "sent"
