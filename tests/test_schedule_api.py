"""Scheduled sends, quiet hours at accept time and cancellation through the REST API, in-process
against the real PostgreSQL, Redis and RabbitMQ (no relay or worker runs here; see
tests/test_schedule.py for the whole system).

- ``send_at``: RFC 3339 with an explicit offset, not in the past, at most
  ``MAX_SEND_AHEAD`` ahead; its deliveries are ``scheduled`` until then, with ``scheduled_for``.
- Quiet hours (recipient > category > app, ``"none"``) that hold when a send is due hold its
  non-urgent deliveries until they end; ``priority: high`` and required categories go at once.
- ``DELETE /api/v1/notifications/<id>`` cancels what has not started.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from devtools import demo
from notify import maintenance, policy, store
from notify.api.serializers import MAX_SEND_AHEAD, SEND_AT_TOLERANCE
from notify.models import Category, Delivery, DeliveryLog, Notification, Recipient
from notify.outbox import relay_once
from tests.helpers import db_counts

pytestmark = pytest.mark.django_db(transaction=True)

USER = "sched-1"
ZONE = "Asia/Seoul"
CONTENT = {"sms": {"body": "Your parcel arrives today"}, "email": {"subject": "Parcel", "text": "Today"}}


def rfc3339(instant: dt.datetime, zone: str = ZONE) -> str:
    return instant.astimezone(policy.zone(zone)).isoformat()


def parse(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def window_around(zone: str, before: int = 60, after: int = 120) -> str:
    """Quiet hours on ``zone``'s clock from ``before`` minutes ago to ``after`` minutes ahead."""
    local = timezone.now().astimezone(policy.zone(zone))
    start, end = local - dt.timedelta(minutes=before), local + dt.timedelta(minutes=after)
    return f"{start:%H:%M}-{end:%H:%M}"


def window_ahead(zone: str, start: int, end: int) -> str:
    local = timezone.now().astimezone(policy.zone(zone))
    return f"{local + dt.timedelta(minutes=start):%H:%M}-{local + dt.timedelta(minutes=end):%H:%M}"


@pytest.fixture
def recipient(api):
    r = api.put(f"/api/v1/recipients/{USER}", {"name": "Min-jun", "timezone": ZONE, "email": "minjun@example.com",
                                               "phone": "+821012345678"}, format="json")
    assert r.status_code == 201, r.content
    return USER


def _send(api, **body):
    return api.post("/api/v1/notifications", {"recipient": USER, "content": CONTENT, **body}, format="json")


def _set_quiet_hours(api, value: str):
    r = api.put(f"/api/v1/recipients/{USER}", {"quiet_hours": value}, format="json")
    assert r.status_code == 200, r.content
    return r.json()


# -- send_at ---------------------------------------------------------------------------------------
def test_send_at_in_the_future_schedules_every_delivery_until_then(api, recipient):
    send_at = (timezone.now() + dt.timedelta(hours=2)).replace(microsecond=0)
    r = _send(api, send_at=rfc3339(send_at), ttl=600)
    assert r.status_code == 202, r.content
    body = r.json()
    assert {d["status"] for d in body["deliveries"]} == {"scheduled"}
    assert {d["reason"] for d in body["deliveries"]} == {"scheduled"}
    assert {parse(d["scheduled_for"]) for d in body["deliveries"]} == {send_at}

    notification = Notification.objects.get(id=body["id"])
    assert notification.send_at == send_at
    # Its TTL counts from when it is due, not from now.
    assert notification.expires_at == send_at + dt.timedelta(seconds=600)
    rows = Delivery.objects.filter(notification=notification)
    assert {(d.status, d.next_attempt_at) for d in rows} == {("scheduled", send_at)}
    assert sorted(DeliveryLog.objects.filter(delivery__in=rows).values_list("to_status", "reason")) == [
        ("scheduled", "scheduled")] * 2
    # Nothing is in the outbox: the relay publishes nothing, and the dispatcher leaves it until due.
    assert relay_once() == 0
    assert maintenance.dispatch_due(now=send_at - dt.timedelta(seconds=1)) == 0
    assert set(rows.values_list("status", flat=True)) == {"scheduled"}
    assert maintenance.dispatch_due(now=send_at) == 2
    assert set(rows.values_list("status", flat=True)) == {"queued"}

    r = api.get(f"/api/v1/notifications/{body['id']}")
    assert parse(r.json()["send_at"]) == send_at and r.json()["cancelled_at"] is None
    assert {d["scheduled_for"] for d in r.json()["deliveries"]} == {None}


def test_send_at_in_any_offset_is_the_same_instant_and_a_replay(api, recipient):
    send_at = (timezone.now() + dt.timedelta(hours=1)).replace(microsecond=0)
    first = api.post("/api/v1/notifications", {"recipient": USER, "content": CONTENT, "send_at": rfc3339(send_at),
                                               "event_id": "parcel-1"}, format="json")
    again = api.post("/api/v1/notifications", {"recipient": USER, "content": CONTENT,
                                               "send_at": rfc3339(send_at, "America/New_York"),
                                               "event_id": "parcel-1"}, format="json")
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert Notification.objects.count() == 1


def test_send_at_within_the_tolerance_in_the_past_goes_now(api, recipient):
    r = _send(api, send_at=rfc3339(timezone.now() - SEND_AT_TOLERANCE / 2))
    assert r.status_code == 202, r.content
    assert {d["status"] for d in r.json()["deliveries"]} == {"queued"}
    assert all("scheduled_for" not in d for d in r.json()["deliveries"])


@pytest.mark.parametrize("value,message", [
    ("2026-12-24T09:00:00", "give the offset"),  # naive: whose 09:00?
    ("2026-12-24 09:00", "give the offset"),
    ("tomorrow", "wrong format"),
    ("2026-13-01T09:00:00Z", "wrong format"),
    (12345, "wrong format"),
])
def test_send_at_must_be_an_rfc3339_instant_with_an_offset(api, recipient, value, message):
    before = db_counts()
    r = _send(api, send_at=value)
    assert r.status_code == 400, r.content
    error = r.json()["error"]
    assert error["code"] == "invalid_request" and list(error["fields"]) == ["send_at"]
    assert message in error["fields"]["send_at"][0].lower()
    assert db_counts() == before


@pytest.mark.parametrize("offset,message", [
    (-(SEND_AT_TOLERANCE + dt.timedelta(seconds=30)), "in the past"),
    (MAX_SEND_AHEAD + dt.timedelta(minutes=5), "days ahead"),
])
def test_send_at_too_early_or_too_far_is_refused(api, recipient, offset, message):
    before = db_counts()
    r = _send(api, send_at=rfc3339(timezone.now() + offset))
    assert r.status_code == 400, r.content
    assert message in r.json()["error"]["fields"]["send_at"][0]
    assert db_counts() == before


def test_batch_items_take_send_at_and_are_checked_one_by_one(api, recipient):
    send_at = (timezone.now() + dt.timedelta(minutes=30)).replace(microsecond=0)
    item = {"recipient": USER, "content": {"sms": {"body": "hi"}}, "channels": ["sms"]}
    r = api.post("/api/v1/notifications/batch", {"notifications": [
        {**item, "send_at": rfc3339(send_at)}, item]}, format="json")
    assert r.status_code == 202, r.content
    first, second = r.json()["notifications"]
    assert first["deliveries"][0]["status"] == "scheduled" and parse(first["deliveries"][0]["scheduled_for"]) == send_at
    assert second["deliveries"][0]["status"] == "queued"

    before = db_counts()
    r = api.post("/api/v1/notifications/batch", {"notifications": [
        item, {**item, "send_at": "2026-12-24T09:00:00"}]}, format="json")
    assert r.status_code == 400, r.content
    assert "notifications.1.send_at" in r.json()["error"]["fields"]
    assert db_counts() == before


# -- quiet hours -----------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["22:00-8:00", "25:00-08:00", "22:00", "always", "22:00-08:00-09:00"])
def test_recipient_quiet_hours_are_validated(api, recipient, value):
    r = api.put(f"/api/v1/recipients/{USER}", {"quiet_hours": value}, format="json")
    assert r.status_code == 400, r.content
    assert list(r.json()["error"]["fields"]) == ["quiet_hours"]
    assert Recipient.objects.get(external_id=USER).quiet_hours == ""


def test_recipient_quiet_hours_are_stored_and_shown(api, recipient):
    assert _set_quiet_hours(api, "22:00-07:30")["quiet_hours"] == "22:00-07:30"
    assert api.get(f"/api/v1/recipients/{USER}").json()["quiet_hours"] == "22:00-07:30"
    assert _set_quiet_hours(api, "none")["quiet_hours"] == "none"
    assert _set_quiet_hours(api, "")["quiet_hours"] == ""


def test_inside_the_recipients_quiet_hours_a_send_is_held_until_they_end(api, recipient):
    window = window_around(ZONE)
    _set_quiet_hours(api, window)
    now = timezone.now()
    r = _send(api, ttl=60)
    assert r.status_code == 202, r.content
    release = policy.quiet_until(now, ZONE, window)
    assert now + dt.timedelta(minutes=119) < release <= now + dt.timedelta(minutes=120)
    deliveries = r.json()["deliveries"]
    assert {(d["status"], d["reason"]) for d in deliveries} == {("scheduled", "quiet_hours")}
    assert {parse(d["scheduled_for"]) for d in deliveries} == {release}
    assert set(Delivery.objects.values_list("next_attempt_at", flat=True)) == {release}
    # Quiet hours hold it; its TTL still counts from now (it was due now).
    notification = Notification.objects.get()
    assert notification.send_at is None
    assert abs(notification.expires_at - (now + dt.timedelta(seconds=60))) < dt.timedelta(seconds=5)


def test_outside_quiet_hours_a_send_goes_at_once(api, recipient):
    _set_quiet_hours(api, window_ahead(ZONE, 60, 120))
    r = _send(api)
    assert {d["status"] for d in r.json()["deliveries"]} == {"queued"}


def test_a_send_at_inside_quiet_hours_is_held_until_they_end(api, recipient):
    window = window_ahead(ZONE, 60, 180)
    _set_quiet_hours(api, window)
    send_at = timezone.now() + dt.timedelta(minutes=90)
    r = _send(api, send_at=rfc3339(send_at))
    deliveries = r.json()["deliveries"]
    release = policy.quiet_until(send_at, ZONE, window)
    assert release > send_at + dt.timedelta(minutes=85)
    assert {(d["status"], d["reason"], parse(d["scheduled_for"])) for d in deliveries} == {
        ("scheduled", "quiet_hours", release)}


def test_high_priority_and_required_categories_go_at_once_inside_quiet_hours(api, recipient, app_key):
    _set_quiet_hours(api, window_around(ZONE))
    Category.objects.create(app=app_key[0], name="security", required=True)
    for body in ({"priority": "high"}, {"category": "security"}):
        r = _send(api, **body)
        assert r.status_code == 202, r.content
        assert {d["status"] for d in r.json()["deliveries"]} == {"queued"}, body
    assert {d["status"] for d in _send(api, category="news").json()["deliveries"]} == {"scheduled"}


def test_quiet_hours_precedence_recipient_over_category_over_app(api, recipient, app_key):
    app = app_key[0]
    app.quiet_hours = window_around(ZONE, 30, 60)
    app.save()
    Category.objects.create(app=app, name="digest", quiet_hours=window_around(ZONE, 30, 90))
    Category.objects.create(app=app, name="chat", quiet_hours="none")

    def held_minutes(category: str) -> float | None:
        now = timezone.now()
        delivery = _send(api, category=category).json()["deliveries"][0]
        if delivery["status"] != "scheduled":
            return None
        return (parse(delivery["scheduled_for"]) - now).total_seconds() / 60

    assert 58 < held_minutes("news") <= 60  # the app's
    assert 88 < held_minutes("digest") <= 90  # the category's over the app's
    assert held_minutes("chat") is None  # the category's "none" over the app's
    _set_quiet_hours(api, window_around(ZONE, 30, 120))
    assert 118 < held_minutes("chat") <= 120  # the recipient's over everything
    _set_quiet_hours(api, "none")
    assert held_minutes("news") is None and held_minutes("digest") is None


def test_quiet_hours_are_read_on_the_recipients_clock(api, recipient):
    # The same wall-clock window, read in Seoul, holds; read in New York (14 hours behind) it
    # does not.
    window = window_around(ZONE)
    _set_quiet_hours(api, window)
    assert {d["status"] for d in _send(api).json()["deliveries"]} == {"scheduled"}
    api.put(f"/api/v1/recipients/{USER}", {"timezone": "America/New_York"}, format="json")
    assert {d["status"] for d in _send(api).json()["deliveries"]} == {"queued"}


# -- cancel ----------------------------------------------------------------------------------------
def test_delete_cancels_a_scheduled_notification_and_the_dispatcher_never_releases_it(api, recipient):
    send_at = timezone.now() + dt.timedelta(minutes=10)
    accepted = _send(api, send_at=rfc3339(send_at)).json()
    r = api.delete(f"/api/v1/notifications/{accepted['id']}")
    assert r.status_code == 200, r.content
    body = r.json()
    assert {d["status"] for d in body["deliveries"]} == {"cancelled"}
    assert {d["reason"] for d in body["deliveries"]} == {"cancelled"}
    assert sorted(body["cancelled"]) == sorted(d["id"] for d in accepted["deliveries"])
    assert body["not_cancelled"] == [] and body["cancelled_at"] is not None
    assert Notification.objects.get().cancelled_at is not None
    log = DeliveryLog.objects.filter(to_status="cancelled").values_list("from_status", "reason")
    assert sorted(log) == [("scheduled", "cancelled")] * 2
    assert maintenance.dispatch_due(now=send_at + dt.timedelta(days=1)) == 0
    assert set(Delivery.objects.values_list("status", flat=True)) == {"cancelled"}

    again = api.delete(f"/api/v1/notifications/{accepted['id']}")
    assert again.status_code == 409 and again.json()["error"]["code"] == "not_cancellable"


def test_delete_takes_a_queued_delivery_even_once_published_and_leaves_a_started_one(api, recipient):
    accepted = _send(api).json()
    assert relay_once() == 2  # both messages are on RabbitMQ now
    sms, email = sorted(Delivery.objects.all(), key=lambda d: d.channel != "sms")
    assert store.claim(str(sms.id)) is not None  # a worker took the SMS: it is sending
    r = api.delete(f"/api/v1/notifications/{accepted['id']}")
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["cancelled"] == [str(email.id)]
    assert body["not_cancelled"] == [{"id": str(sms.id), "channel": "sms", "status": "sending"}]
    assert {d["channel"]: d["status"] for d in body["deliveries"]} == {"sms": "sending", "email": "cancelled"}
    # The worker that gets the email's message finds nothing to claim.
    assert store.claim(str(email.id)) is None
    assert Delivery.objects.get(id=email.id).status == "cancelled"


def test_delete_of_a_finished_notification_is_409_and_changes_nothing(api, recipient):
    accepted = _send(api, channels=["sms"]).json()
    Delivery.objects.update(status="sent")
    r = api.delete(f"/api/v1/notifications/{accepted['id']}")
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_cancellable"
    assert Notification.objects.get().cancelled_at is None
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}


def test_delete_of_another_apps_notification_is_404(api, recipient):
    accepted = _send(api, send_at=rfc3339(timezone.now() + dt.timedelta(minutes=5))).json()
    _, other_key = demo.create_app("other")
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {other_key}")
    r = api.delete(f"/api/v1/notifications/{accepted['id']}")
    assert r.status_code == 404
    assert set(Delivery.objects.values_list("status", flat=True)) == {"scheduled"}
    assert api.delete("/api/v1/notifications/00000000-0000-4000-8000-000000000000").status_code == 404
