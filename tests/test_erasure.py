"""Erasure of a recipient's personal data (notify.privacy) through the API and the admin, on the
real PostgreSQL and Redis: afterwards no row of any table holds the recipient's name, email,
phone, device tokens or Web Push keys; the deliveries stay, with their statuses, for the counts;
what had not started is cancelled and never sent; the external id is free again; another app's
key changes nothing."""

from __future__ import annotations

import datetime as dt
import secrets

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.utils import timezone

from devtools import demo
from notify import cache as notify_cache
from notify import send as sending
from notify import store
from notify.models import Delivery, DeliveryEvent, DeliveryLog, Device, Notification, Preference, Recipient
from notify.privacy import TOMBSTONE_PREFIX

from tests.helpers import browser_subscription, dangling_delivery_references

pytestmark = pytest.mark.django_db(transaction=True)

USER = "erase-me-7f3a"
NAME = "Ana Müller"
EMAIL = "ana.mueller@example.com"
PHONE = "+4915123456789"


@pytest.fixture
def person(api):
    """The recipient USER with a name, email, phone, an iPhone, an Android phone and a browser,
    and an SMS opt-out: the values erasure must remove, by name."""
    r = api.put(f"/api/v1/recipients/{USER}", {"name": NAME, "locale": "de-DE", "timezone": "Europe/Berlin",
                                               "email": EMAIL, "phone": PHONE, "quiet_hours": "none"},
                format="json")
    assert r.status_code == 201, r.content
    apns, fcm, subscription = secrets.token_hex(32), demo.fcm_token(), browser_subscription(
        f"https://push.example.net/wp/{secrets.token_urlsafe(24)}")
    for device in ({"platform": "ios", "token": apns}, {"platform": "android", "token": fcm},
                   {"platform": "web", "subscription": subscription}):
        r = api.post(f"/api/v1/recipients/{USER}/devices", device, format="json")
        assert r.status_code == 201, r.content
    r = api.put(f"/api/v1/recipients/{USER}/preferences",
                {"preferences": [{"channel": "email", "category": "marketing", "enabled": False}]}, format="json")
    assert r.status_code == 200, r.content
    return {"name": NAME, "email": EMAIL, "phone": PHONE, "apns": apns, "fcm": fcm,
            "endpoint": subscription["endpoint"], "p256dh": subscription["keys"]["p256dh"],
            "auth": subscription["keys"]["auth"]}


def _send(api, recipient=USER, **extra):
    body = {"recipient": recipient, "template": "order-shipped", "data": {"name": NAME, "order": "A-7"}, **extra}
    r = api.post("/api/v1/notifications", body, format="json")
    assert r.status_code == 202, r.content
    return r.json()


def _sent_with_answers(delivery_id: str, answer: dict) -> None:
    """Take a queued delivery through the worker's own statements: claimed, sent with a provider
    answer that echoes the address, then delivered with the event as received."""
    claimed = store.claim(delivery_id)
    assert claimed is not None
    assert store.record_outcome(delivery_id, claimed["attempts"], "sent", "", provider="sandbox",
                                provider_message_id=f"MSG-{delivery_id[:8]}", provider_status=201, answer=answer)
    store.record_delivery_event(delivery_id, "delivered", timezone.now(), data=answer)


@pytest.fixture
def history(api, person):
    """Three notifications of USER: one sent on every channel (answers and events echoing each
    address), one queued, one scheduled for tomorrow. The profile is cached (the sends read it)."""
    done = _send(api)
    for delivery in done["deliveries"]:
        _sent_with_answers(delivery["id"], {"to": delivery["to"], "name": NAME, "status": "accepted"})
    queued = _send(api, channels=["sms", "email"])
    send_at = (timezone.now() + dt.timedelta(days=1)).replace(microsecond=0).isoformat()
    scheduled = _send(api, channels=["email"], send_at=send_at)
    assert cache.get(notify_cache.profile_key(_app_id(), USER)) is not None
    return {"sent": done, "queued": queued, "scheduled": scheduled}


def _app_id() -> int:
    return Recipient.objects.get(external_id=USER).app_id


def _rows_holding(values) -> list[str]:
    """Every row of every table of the database whose text (all its columns, JSON included)
    holds one of ``values``: ``"table: value"``."""
    found = []
    with connection.cursor() as cursor:
        # Tables and partitioned tables; a partition's rows are read through its parent.
        cursor.execute("SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace "
                       "AND relkind IN ('r', 'p') AND NOT relispartition")
        for (table,) in cursor.fetchall():
            cursor.execute(f'SELECT t::text FROM "{table}" t')
            for (text,) in cursor.fetchall():
                found += [f"{table}: {value}" for value in values if value in text]
    return found


def _statuses(notification_ids) -> dict[str, tuple]:
    return {str(d.id): (d.channel, d.status, d.provider_message_id, d.variant, d.step)
            for d in Delivery.objects.filter(notification_id__in=notification_ids)}


def test_erasure_leaves_no_personal_data_in_any_table_and_keeps_the_counts(api, person, history):
    ids = [history[name]["id"] for name in ("sent", "queued", "scheduled")]
    # The scan is not vacuous: before, every value is found where it is kept.
    before = _rows_holding(list(person.values()) + [USER])
    for table in ("notify_recipient", "notify_device", "notify_delivery", "notify_deliverylog",
                  "notify_deliveryevent", "notify_notification"):
        assert any(row.startswith(f"{table}:") for row in before), table
    statuses = _statuses(ids)
    assert Delivery.objects.filter(notification_id__in=ids, device__isnull=False).exists()
    log_rows, events = DeliveryLog.objects.count(), sorted(DeliveryEvent.objects.values_list("delivery_id", "kind"))

    r = api.post(f"/api/v1/recipients/{USER}/erase")

    assert r.status_code == 200, r.content
    body = r.json()
    pending = {d["id"] for name in ("queued", "scheduled") for d in history[name]["deliveries"]
               if d["status"] in ("queued", "scheduled")}
    assert pending and set(body.pop("cancelled")) == pending
    assert body.pop("erased_at")
    assert body == {"external_id": USER, "devices": 3, "preferences": 1, "notifications": 3,
                    "deliveries": len(statuses), "sending": 0}
    assert _rows_holding(list(person.values()) + [USER]) == []
    # Kept for the counts: every delivery with its channel, message id, variant and step; the
    # finished ones with their status, the pending ones cancelled; the log and the events.
    after = _statuses(ids)
    assert after == {i: (c, "cancelled" if i in pending else s, m, v, st) for i, (c, s, m, v, st) in statuses.items()}
    assert {s for i, (_, s, *_rest) in after.items() if i not in pending} == {"delivered"}
    assert DeliveryLog.objects.count() == log_rows + len(pending)
    assert sorted(DeliveryEvent.objects.values_list("delivery_id", "kind")) == events
    assert Notification.objects.filter(id__in=ids).count() == 3
    assert not Device.objects.exists() and not Preference.objects.exists()
    assert dangling_delivery_references() == {"notification": 0, "device": 0}
    # The row is a tombstone: no personal field left, paused, under an id no request can name.
    row = Recipient.objects.get()
    assert row.external_id == f"{TOMBSTONE_PREFIX}{row.id}"
    assert (row.name, row.email, row.phone, row.locale, row.timezone, row.quiet_hours, row.muted) == (
        "", "", "", "en", "UTC", "", True)
    assert api.get(f"/api/v1/recipients/%7Ferased:{row.id}").status_code == 400


def test_a_replay_of_an_erased_send_answers_without_the_addresses(api, person):
    first = _send(api, channels=["sms", "email"], event_id="order-A-7-shipped")
    assert {d["to"] for d in first["deliveries"]} == {PHONE, EMAIL}
    assert api.post(f"/api/v1/recipients/{USER}/erase").status_code == 200
    again = _send(api, channels=["sms", "email"], event_id="order-A-7-shipped")
    assert again["id"] == first["id"] and {d["to"] for d in again["deliveries"]} == {None}


def test_a_queued_delivery_ends_cancelled_and_is_never_sent(api, person, history):
    queued = [d["id"] for d in history["queued"]["deliveries"] if d["status"] == "queued"]
    assert queued
    assert api.post(f"/api/v1/recipients/{USER}/erase").status_code == 200
    for delivery_id in queued:
        # The worker that gets its message finds nothing to claim: no provider is called.
        assert sending.send(delivery_id) == "skipped"
        delivery = Delivery.objects.get(id=delivery_id)
        assert (delivery.status, delivery.reason, delivery.attempts) == ("cancelled", "cancelled", 0)
        assert not delivery.log.filter(to_status="sending").exists()
    assert Notification.objects.get(id=history["queued"]["id"]).cancelled_at is not None


def test_the_cached_profile_is_dropped_and_the_id_is_free_for_a_new_recipient(api, person, history):
    app_id = _app_id()
    assert api.post(f"/api/v1/recipients/{USER}/erase").status_code == 200
    assert cache.get(notify_cache.profile_key(app_id, USER)) is None
    # A send to the old id finds no recipient (it would have used the cached profile).
    r = api.post("/api/v1/notifications", {"recipient": USER, "content": {"sms": {"body": "hi"}}}, format="json")
    assert r.status_code == 404, r.content
    # Erasing again: there is no such recipient any more.
    r = api.post(f"/api/v1/recipients/{USER}/erase")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    # The id starts afresh: no devices, preferences or history of the erased person.
    r = api.put(f"/api/v1/recipients/{USER}", {"email": "new.owner@example.com"}, format="json")
    assert r.status_code == 201, r.content
    assert r.json()["name"] == "" and r.json()["phone"] == ""
    assert api.get(f"/api/v1/recipients/{USER}/devices").json() == []
    assert api.get(f"/api/v1/recipients/{USER}/preferences").json() == {"preferences": []}
    fresh = Recipient.objects.get(app_id=app_id, external_id=USER)
    assert not Notification.objects.filter(recipient=fresh).exists()
    assert Notification.objects.filter(recipient__external_id__startswith=TOMBSTONE_PREFIX).count() == 3


def test_another_apps_key_gets_404_and_nothing_changes(api, person, history):
    _, other_key = demo.create_app("other")
    from rest_framework.test import APIClient

    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Api-Key {other_key}")
    def snapshot():
        return [list(model.objects.order_by("pk").values()) for model in (
            Recipient, Device, Preference, Notification, Delivery, DeliveryLog, DeliveryEvent)]

    before = snapshot()

    r = other.post(f"/api/v1/recipients/{USER}/erase")

    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.content
    assert snapshot() == before
    # The other app's own recipient of the same id is its own to erase; this app's stays.
    assert other.put(f"/api/v1/recipients/{USER}", {"email": "b@example.org"}, format="json").status_code == 201
    r = other.post(f"/api/v1/recipients/{USER}/erase")
    assert r.status_code == 200 and r.json()["notifications"] == 0
    mine = Recipient.objects.get(app_id=_app_id(), external_id=USER)
    assert (mine.email, mine.phone, Device.objects.filter(recipient=mine).count()) == (EMAIL, PHONE, 3)


def test_an_external_id_no_recipient_can_have_is_a_400(api, person):
    r = api.post("/api/v1/recipients/a%01b/erase")
    assert r.status_code == 400 and r.json()["error"]["fields"].keys() == {"external_id"}, r.content
    assert Recipient.objects.get().email == EMAIL


def test_a_delivery_being_sent_finishes_and_erasing_again_clears_what_it_wrote(api, person, admin_client):
    sms = next(d for d in _send(api, channels=["sms"])["deliveries"])
    claimed = store.claim(sms["id"])  # a worker has it: it is calling the provider

    r = api.post(f"/api/v1/recipients/{USER}/erase")

    assert r.status_code == 200 and r.json()["sending"] == 1 and r.json()["cancelled"] == []
    assert Delivery.objects.get(id=sms["id"]).status == "sending"
    # The provider answers; the worker records it, answer and all.
    assert store.record_outcome(sms["id"], claimed["attempts"], "sent", "", provider="sandbox",
                                provider_status=201, answer={"to": PHONE})
    assert _rows_holding([PHONE]) == ["notify_deliverylog: " + PHONE]
    # The admin's action erases the tombstone again.
    row = Recipient.objects.get()
    response = admin_client.post("/admin/notify/recipient/", {"action": "erase_personal_data",
                                                              "_selected_action": [row.pk], "post": "yes"})
    assert response.status_code == 302
    assert _rows_holding([PHONE]) == []
    assert Delivery.objects.get(id=sms["id"]).status == "sent"


def test_a_preference_link_issued_before_the_erasure_is_gone_and_cannot_unmute(api, person):
    url = api.get(f"/api/v1/recipients/{USER}/preference-link").json()["url"]
    path = url[url.index("/preferences/"):]
    page = Client()
    assert page.get(path).status_code == 200
    assert api.post(f"/api/v1/recipients/{USER}/erase").status_code == 200
    tombstone = Recipient.objects.get(external_id__startswith=TOMBSTONE_PREFIX)
    assert tombstone.muted
    response = page.get(path)
    assert response.status_code == 404
    assert "We have nothing stored about you any more." in response.content.decode()
    assert page.post(path, {"pause": "keep", "ch:email": "on"}).status_code == 404  # unchecked "muted"
    tombstone.refresh_from_db()
    assert tombstone.muted and not Preference.objects.filter(recipient=tombstone, source="page").exists()


def test_a_send_that_raced_the_erasure_is_not_sent(api, person):
    """A send that read the recipient before the erasure committed is written after it, for
    the tombstone; the tombstone is muted, so the worker suppresses it without a provider call."""
    app_id = _app_id()
    profile = notify_cache.load_profile(app_id, USER)
    assert api.post(f"/api/v1/recipients/{USER}/erase").status_code == 200
    cache.set(notify_cache.profile_key(app_id, USER), profile)  # as the racing request had read it
    late = _send(api, channels=["sms"], category="orders")["deliveries"][0]
    assert late["status"] == "queued"
    assert sending.send(late["id"]) == "suppressed"
    assert Delivery.objects.get(id=late["id"]).reason == "muted"


@pytest.fixture
def admin_client(client, app_key):
    User.objects.create_superuser("ops", "ops@example.com", "pw-for-tests-only")
    client.login(username="ops", password="pw-for-tests-only")
    return client


def test_the_admin_action_asks_then_erases_with_the_same_rule(api, person, history, admin_client):
    row = Recipient.objects.get()
    form = {"action": "erase_personal_data", "_selected_action": [row.pk]}

    page = admin_client.post("/admin/notify/recipient/", form)

    assert page.status_code == 200 and b"Erase personal data" in page.content and USER.encode() in page.content
    assert b'name="post" value="yes"' in page.content
    assert Recipient.objects.get().email == EMAIL  # nothing yet

    done = admin_client.post("/admin/notify/recipient/", {**form, "post": "yes"}, follow=True)

    assert done.status_code == 200
    assert "Personal data of 1 recipient(s) erased: 3 device(s) and 1 preference(s) deleted" in \
        done.content.decode()
    assert _rows_holding(list(person.values()) + [USER]) == []
    assert cache.get(notify_cache.profile_key(row.app_id, USER)) is None
    pending = [d["id"] for d in history["queued"]["deliveries"] + history["scheduled"]["deliveries"]
               if d["status"] in ("queued", "scheduled")]
    assert set(Delivery.objects.filter(id__in=pending).values_list("status", flat=True)) == {"cancelled"}
    assert api.put(f"/api/v1/recipients/{USER}", {"name": "New"}, format="json").status_code == 201


def test_a_staff_user_without_the_delete_permission_cannot_erase(client, person):
    User.objects.create_user("viewer", "v@example.com", "pw-for-tests-only", is_staff=True)
    from django.contrib.auth.models import Permission

    viewer = User.objects.get(username="viewer")
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_recipient", "change_recipient"]))
    client.login(username="viewer", password="pw-for-tests-only")
    row = Recipient.objects.get()
    response = client.post("/admin/notify/recipient/", {"action": "erase_personal_data",
                                                        "_selected_action": [row.pk], "post": "yes"})
    assert response.status_code in (200, 302)
    assert Recipient.objects.get().email == EMAIL


def test_an_erasure_of_an_id_the_row_no_longer_has_changes_nothing(person):
    """Two erasures of one id at once: the second finds the row already renamed once it gets
    the lock, and answers as for an unknown recipient instead of erasing the tombstone."""
    from notify import privacy

    row = Recipient.objects.get()
    assert privacy.erase_recipient(row.pk, "someone-else") is None
    assert Recipient.objects.get().email == EMAIL and Device.objects.count() == 3
