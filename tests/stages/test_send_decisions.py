"""What the recipient decides holds at the moment of sending (notify.policy through notify.send):
a delivery accepted before an SMS STOP, a one-click unsubscribe, a mute or a category's new
default is not sent; a required category is."""

from __future__ import annotations

import datetime as dt

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone
from twilio.request_validator import RequestValidator

from notify import providers, send
from notify.unsubscribe import unsubscribe_url
from notify.models import Category, Delivery, Recipient

pytestmark = pytest.mark.django_db(transaction=True)


def accept(api, user, body, **profile):
    api.put(f"/api/v1/recipients/{user}", profile, format="json")
    r = api.post("/api/v1/notifications", {"recipient": user, **body}, format="json")
    assert r.status_code == 202, r.content
    return r.json()["deliveries"]


def outcome(delivery_id):
    row = Delivery.objects.get(id=delivery_id)
    return row.status, row.reason


def test_an_sms_stop_suppresses_an_sms_already_queued(api, ctl, client):
    (d,) = accept(api, "stop-1", {"content": {"sms": {"body": "hi"}}}, phone="+14155550161")
    fields = {"From": "+14155550161", "Body": "STOP"}
    url = settings.NOTIFY_PUBLIC_URL.rstrip("/") + "/webhooks/twilio/inbound"
    signature = RequestValidator(providers.config_for("twilio")["auth_token"]).compute_signature(url, fields)
    assert client.post("/webhooks/twilio/inbound", fields, HTTP_X_TWILIO_SIGNATURE=signature).status_code == 204
    assert send.send(d["id"]) == "suppressed"
    assert outcome(d["id"]) == ("suppressed", "opted_out")
    assert not ctl.records("twilio", delivery_id=d["id"])


@override_settings(NOTIFY_PUBLIC_URL="https://notify.example.com")
def test_a_one_click_unsubscribe_suppresses_the_next_email_already_queued(api, ctl, client):
    body = {"content": {"email": {"subject": "s", "text": "t"}}, "category": "news"}
    (first,) = accept(api, "unsub-1", body, email="unsub-1@example.com")
    (second,) = accept(api, "unsub-1", body)
    assert send.send(first["id"]) == "sent"
    # The link the first email carried (List-Unsubscribe), as the mailbox provider POSTs it.
    path = unsubscribe_url(first["id"]).removeprefix("https://notify.example.com")
    assert client.post(path, {"List-Unsubscribe": "One-Click"}).status_code == 200
    assert send.send(second["id"]) == "suppressed"
    assert outcome(second["id"]) == ("suppressed", "opted_out")
    assert not ctl.records("ses", delivery_id=second["id"])


def test_a_mute_suppresses_a_queued_delivery_and_ends_when_it_says(api, ctl):
    (d,) = accept(api, "mute-1", {"content": {"sms": {"body": "hi"}}}, phone="+14155550162")
    Recipient.objects.filter(external_id="mute-1").update(muted=True, muted_until=timezone.now() + dt.timedelta(hours=1))
    assert send.send(d["id"]) == "suppressed"
    assert outcome(d["id"]) == ("suppressed", "muted")
    # A mute whose end has passed no longer holds.
    Recipient.objects.filter(external_id="mute-1").update(muted_until=timezone.now() - dt.timedelta(seconds=1))
    (again,) = accept(api, "mute-1", {"content": {"sms": {"body": "hi"}}})
    assert send.send(again["id"]) == "sent"


def test_a_category_default_off_applies_to_who_never_chose(api, ctl, app_key):
    (d,) = accept(api, "dflt-1", {"content": {"sms": {"body": "hi"}}, "category": "promo"}, phone="+14155550163")
    Category.objects.create(app=app_key[0], name="promo", defaults={"sms": False})
    assert send.send(d["id"]) == "suppressed"
    assert outcome(d["id"]) == ("suppressed", "opted_out")
    # An explicit choice wins over the default.
    api.put("/api/v1/recipients/dflt-1/preferences",
            {"preferences": [{"channel": "sms", "category": "promo", "enabled": True}]}, format="json")
    (again,) = accept(api, "dflt-1", {"content": {"sms": {"body": "hi"}}, "category": "promo"})
    assert send.send(again["id"]) == "sent"


def test_a_required_category_goes_out_through_opt_out_and_mute(api, ctl, app_key):
    Category.objects.create(app=app_key[0], name="security", required=True)
    api.put("/api/v1/recipients/req-1", {"phone": "+14155550164"}, format="json")
    api.put("/api/v1/recipients/req-1/preferences", {"preferences": [{"channel": "sms", "enabled": False}]},
            format="json")
    Recipient.objects.filter(external_id="req-1").update(muted=True)
    (d,) = accept(api, "req-1", {"content": {"sms": {"body": "code 123456"}}, "category": "security"})
    assert d["status"] == "queued"
    assert send.send(d["id"]) == "sent"
    (other,) = accept(api, "req-1", {"content": {"sms": {"body": "news"}}, "category": "news"})
    assert other["status"] == "suppressed"
