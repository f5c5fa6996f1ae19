"""Send (notify.send): the worker's claim → provider → record, called in this process against a
real provider sandbox. The service reacts to the adapters' outcomes and chooses the provider."""

from __future__ import annotations

import secrets

import pytest

from notify import send
from notify.models import Delivery, DeliveryLog, Device, Preference

pytestmark = pytest.mark.django_db(transaction=True)


def accept(api, user, body, **profile):
    api.put(f"/api/v1/recipients/{user}", profile, format="json")
    r = api.post("/api/v1/notifications", {"recipient": user, **body}, format="json")
    assert r.status_code == 202, r.content
    return r.json()["deliveries"]


def test_a_sent_delivery_records_its_provider_and_answer(api, ctl):
    (d,) = accept(api, "s1", {"content": {"sms": {"body": "안녕하세요"}}}, phone="+14155550111")
    assert send.send(d["id"]) == "sent"
    row = Delivery.objects.get(id=d["id"])
    assert (row.status, row.provider) == ("sent", "twilio") and row.provider_message_id.startswith("SM")
    (record,) = ctl.records("twilio", delivery_id=d["id"])
    assert record["accepted"]
    assert send.send(d["id"]) == "skipped"  # a duplicate task finds nothing to claim


def test_a_recipient_refusal_opts_the_recipient_out_of_the_channel(api, ctl):
    ctl.add_fault(provider="twilio", status=400, code=21610, to="+14155550112", count=1)
    (d,) = accept(api, "s2", {"content": {"sms": {"body": "hi"}}}, phone="+14155550112")
    assert send.send(d["id"]) == "failed"
    assert Delivery.objects.get(id=d["id"]).reason == "21610"
    pref = Preference.objects.get(recipient__external_id="s2")
    assert (pref.channel, pref.category, pref.enabled, pref.source) == ("sms", "", False, "provider")
    (again,) = accept(api, "s2", {"content": {"sms": {"body": "hi"}}})
    assert (again["status"], again["reason"]) == ("suppressed", "opted_out")


def test_a_dead_token_deactivates_only_that_device(api, ctl):
    api.put("/api/v1/recipients/s3", {}, format="json")
    tokens = [secrets.token_hex(32), secrets.token_hex(32)]
    for token in tokens:
        api.post("/api/v1/recipients/s3/devices", {"platform": "ios", "token": token}, format="json")
    ctl.kill_token("apns", tokens[0])
    deliveries = accept(api, "s3", {"content": {"push": {"title": "t"}}})
    outcomes = {d["to"]: send.send(d["id"]) for d in deliveries}
    assert outcomes == {tokens[0]: "failed", tokens[1]: "sent"}
    assert {d.token: d.active for d in Device.objects.filter(recipient__external_id="s3")} == {
        tokens[0]: False, tokens[1]: True}


def test_the_secondary_provider_sends_while_the_primarys_breaker_is_open(api, ctl, tripped, settings):
    settings.NOTIFY_CHANNEL_PROVIDERS = {**settings.NOTIFY_CHANNEL_PROVIDERS, "email": ("ses", "smtp")}
    tripped("ses")
    (d,) = accept(api, "s4", {"content": {"email": {"subject": "주문", "text": "t"}}}, email="s4@example.com")
    assert send.send(d["id"]) == "sent"
    assert Delivery.objects.get(id=d["id"]).provider == "smtp"
    assert len(ctl.records("smtp", delivery_id=d["id"])) == 1 and not ctl.records("ses", delivery_id=d["id"])


def test_without_a_provider_to_call_the_delivery_waits_and_keeps_its_attempt(api, ctl, tripped, settings):
    (d,) = accept(api, "s5", {"content": {"email": {"subject": "s", "text": "t"}}}, email="s5@example.com")
    tripped("ses")
    assert send.send(d["id"]) == "retrying"
    row = Delivery.objects.get(id=d["id"])
    assert (row.reason, row.attempts, row.provider) == ("circuit_open", 0, "")
    assert not ctl.records("ses", delivery_id=d["id"])


def test_the_message_carries_only_the_extras_its_adapter_declares(api, ctl, settings):
    settings.NOTIFY_PUBLIC_URL = "https://notify.example.com"
    deliveries = accept(api, "s6", {"content": {"sms": {"body": "x"}, "email": {"subject": "s", "text": "t"}}},
                        phone="+14155550113", email="s6@example.com")
    claims = {d["channel"]: send.claim(d["id"]) for d in deliveries}
    sms = send.message_for(claims["sms"], "twilio")
    email = send.message_for(claims["email"], "ses")
    assert sms.status_callback == "https://notify.example.com/webhooks/twilio/status" and sms.unsubscribe_url is None
    assert email.status_callback is None and email.unsubscribe_url.startswith("https://notify.example.com/unsubscribe/")
    assert DeliveryLog.objects.filter(delivery_id__in=[d["id"] for d in deliveries], to_status="sending").count() == 2


def test_an_opt_out_after_accept_holds_at_the_moment_of_sending(api, ctl):
    (d,) = accept(api, "s7", {"content": {"sms": {"body": "hi"}}}, phone="+14155550114")
    api.put("/api/v1/recipients/s7/preferences", {"preferences": [{"channel": "sms", "enabled": False}]},
            format="json")
    assert send.send(d["id"]) == "suppressed"
    row = Delivery.objects.get(id=d["id"])
    assert (row.status, row.reason) == ("suppressed", "opted_out")
    assert not ctl.records("twilio", delivery_id=d["id"])


def test_a_category_opt_out_after_accept_holds_and_a_category_opt_in_wins_over_the_channel(api, ctl):
    body = {"content": {"sms": {"body": "hi"}}, "category": "promo"}
    (promo,) = accept(api, "s8", body, phone="+14155550115")
    (other,) = accept(api, "s8", {"content": {"sms": {"body": "hi"}}, "category": "orders"})
    api.put("/api/v1/recipients/s8/preferences", {"preferences": [
        {"channel": "sms", "category": "promo", "enabled": False}]}, format="json")
    assert (send.send(promo["id"]), send.send(other["id"])) == ("suppressed", "sent")
    (again,) = accept(api, "s8", {"content": {"sms": {"body": "hi"}}, "category": "orders"})
    api.put("/api/v1/recipients/s8/preferences", {"preferences": [
        {"channel": "sms", "enabled": False}, {"channel": "sms", "category": "orders", "enabled": True}]}, format="json")
    assert send.send(again["id"]) == "sent"


def test_a_device_removed_after_accept_is_not_sent_to(api, ctl):
    api.put("/api/v1/recipients/s9", {}, format="json")
    device = api.post("/api/v1/recipients/s9/devices", {"platform": "ios", "token": secrets.token_hex(32)},
                      format="json").json()
    (d,) = accept(api, "s9", {"content": {"push": {"title": "t"}}})
    assert api.delete(f"/api/v1/recipients/s9/devices/{device['id']}").status_code == 204
    assert send.send(d["id"]) == "suppressed"
    assert Delivery.objects.get(id=d["id"]).reason == "device_removed"
    assert not ctl.records("apns", delivery_id=d["id"])


@pytest.mark.parametrize("locale, body, label", [
    ("de-DE", {"content": {"email": {"subject": "s", "text": "t"}}}, "Benachrichtigungseinstellungen verwalten"),
    ("ko-KR", {"content": {"email": {"subject": "s", "text": "t"}}}, "알림 설정 관리"),
    ("pt-BR", {"content": {"email": {"subject": "s", "text": "t"}}}, "Manage your notification preferences"),
    # The content's language wins: the template has Korean only, so the whole email is Korean.
    ("de-DE", {"template": "order-shipped", "data": {"name": "Jonas", "order": "A-7"}}, "알림 설정 관리"),
])
def test_the_preference_link_in_an_email_speaks_the_language_of_the_email(api, ctl, locale, body, label):
    user = f"l-{secrets.token_hex(3)}"
    deliveries = accept(api, user, {**body, "channels": ["email"]}, email=f"{user}@example.com", locale=locale)
    (d,) = deliveries
    assert send.send(d["id"]) == "sent"
    (record,) = ctl.records("ses", delivery_id=d["id"])
    simple = record["body"]["Content"]["Simple"]["Body"]
    assert f"\n-- \n{label}: http" in simple["Text"]["Data"], simple["Text"]["Data"]
    if "Html" in simple:
        assert f">{label}</a></p>" in simple["Html"]["Data"]
