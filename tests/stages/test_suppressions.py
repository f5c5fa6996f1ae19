"""Address suppressions (notify.models.AddressSuppression): a hard bounce or a complaint about an
address stops email to it for the whole app, at accept and at the moment of sending, for every
category and every recipient holding it, and no longer once the address changes or an operator
removes the suppression. The SES/SNS path that creates them: tests/test_ses_events.py."""

from __future__ import annotations

import pytest

from notify import receipts, send, store
from notify.models import AddressSuppression, Category, Delivery, Preference

pytestmark = pytest.mark.django_db(transaction=True)

EMAIL = {"email": {"subject": "Your code", "text": "123456"}}


def accept(api, user, body=None, **profile):
    if profile:
        api.put(f"/api/v1/recipients/{user}", profile, format="json")
    r = api.post("/api/v1/notifications", {"recipient": user, "content": EMAIL, **(body or {})}, format="json")
    assert r.status_code == 202, r.content
    (delivery,) = r.json()["deliveries"]
    return delivery


def test_a_hard_bounce_suppresses_the_address_for_every_holder_and_category(api, ctl, app_key):
    Category.objects.create(app=app_key[0], name="security", required=True)
    first = accept(api, "sup-1", email="Bounce@Example.com")
    queued = accept(api, "sup-2", email="bounce@example.com")  # another recipient at the same mailbox
    assert send.send(first["id"]) == "sent"
    receipts.record(first["id"], "bounced", source="ses", reason="Permanent:General", refused=True)
    row = AddressSuppression.objects.get()
    assert (row.app_id, row.channel, row.address, row.reason, str(row.delivery_id)) == (
        app_key[0].id, "email", "bounce@example.com", "hard_bounce", first["id"])
    assert not Preference.objects.exists()  # the person chose nothing: the address is gone
    # At the moment of sending: the one queued before the bounce is never sent.
    assert send.send(queued["id"]) == "suppressed"
    assert (Delivery.objects.get(id=queued["id"]).reason, len(ctl.records("ses", delivery_id=queued["id"]))) == (
        "hard_bounce", 0)
    # At accept: every holder, every category, a required one too.
    for user, body in (("sup-1", {}), ("sup-2", {"category": "security"})):
        again = accept(api, user, body)
        assert (again["status"], again["reason"]) == ("suppressed", "hard_bounce")
    # A recipient given the address later is suppressed as well.
    assert accept(api, "sup-3", email="BOUNCE@example.com")["reason"] == "hard_bounce"


def test_a_complaint_suppresses_and_a_repeat_keeps_the_first_reason(api, ctl, app_key):
    delivery = accept(api, "sup-4", email="spam@example.com")
    assert send.send(delivery["id"]) == "sent"
    # Whether or not a recipient holds the address; once.
    assert store.suppress_address(app_key[0].id, "email", "Nobody@example.com", "complaint") is True
    assert store.suppress_address(app_key[0].id, "email", "nobody@example.com", "hard_bounce") is False
    receipts.record(delivery["id"], "complained", source="ses", reason="abuse", refused=True)
    receipts.record(delivery["id"], "bounced", source="ses", reason="Permanent:General", refused=True)
    assert list(AddressSuppression.objects.filter(address="spam@example.com").values_list("reason", flat=True)) == [
        "complaint"]
    assert accept(api, "sup-4")["reason"] == "complaint"


def test_a_soft_refusal_and_other_channels_are_untouched(api, ctl):
    delivery = accept(api, "sup-5", email="ok@example.com", phone="+14155550170")
    assert send.send(delivery["id"]) == "sent"
    receipts.record(delivery["id"], "bounced", source="ses", reason="Transient:MailboxFull")  # not refused
    assert not AddressSuppression.objects.exists()
    r = api.post("/api/v1/notifications", {"recipient": "sup-5", "content": {**EMAIL, "sms": {"body": "hi"}}},
                 format="json")
    assert {d["channel"]: d["status"] for d in r.json()["deliveries"]} == {"email": "queued", "sms": "queued"}


def test_a_new_address_or_the_operators_removal_lets_mail_through_again(api, ctl, admin_client):
    delivery = accept(api, "sup-6", email="gone@example.com")
    assert send.send(delivery["id"]) == "sent"
    receipts.record(delivery["id"], "bounced", source="ses", reason="Permanent:General", refused=True)
    assert accept(api, "sup-6")["status"] == "suppressed"
    # The recipient fixes their address: the new one gets mail at once.
    assert accept(api, "sup-6", email="new@example.com")["status"] == "queued"
    # The old address is still suppressed for whoever holds it, until an operator deletes it.
    assert accept(api, "sup-7", email="gone@example.com")["status"] == "suppressed"
    row = AddressSuppression.objects.get()
    r = admin_client.post(f"/admin/notify/addresssuppression/{row.id}/delete/", {"post": "yes"})
    assert r.status_code == 302 and not AddressSuppression.objects.exists()
    assert accept(api, "sup-7")["status"] == "queued"  # the cached profile was cleared too
