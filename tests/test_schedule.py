"""Scheduled sends, cancellation and quiet hours on the whole system (tests/conftest.py
``stack``): real HTTP calls to the API, the relay, the channel workers and the dispatcher (beat,
every second, on the database's clock), and the provider sandbox's records as proof of what
went over the wire and when.

The controllable-clock tests across the daylight-saving changes are in
tests/test_schedule_clock.py; the API's validation in tests/test_schedule_api.py.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest

from devtools import demo
from notify import policy
from notify.models import REACHED_PROVIDER, App, Category, Delivery, DeliveryLog
from tests.conftest import wait_until

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

ZONE = "Europe/Berlin"


@pytest.fixture
def key(stack, transactional_db):
    return demo.create_app("schedule")[1]


def register(stack, key, user: str, **extra) -> None:
    status, body = demo.call(stack.api_url, key, "PUT", f"/api/v1/recipients/{user}",
                             {"timezone": ZONE, "phone": "+4915123456789", **extra})
    assert status in (200, 201), body


def send_sms(stack, key, user: str, **extra) -> dict:
    status, body = demo.call(stack.api_url, key, "POST", "/api/v1/notifications", {
        "recipient": user, "content": {"sms": {"body": f"hello {user}"}}, "channels": ["sms"], **extra})
    assert status == 202, body
    return body


def db_now() -> dt.datetime:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        return cursor.fetchone()[0]


def sms_records(control, delivery_id: str) -> list[dict]:
    return [r for r in control.records("twilio", delivery_id=delivery_id) if r.get("accepted")]


def wait_sent(delivery_id: str, timeout: float = 30) -> Delivery:
    return wait_until(lambda: Delivery.objects.filter(id=delivery_id, status__in=REACHED_PROVIDER).first(), timeout=timeout,
                      message=f"delivery {delivery_id} to be sent")


def test_a_send_at_goes_out_once_after_it_is_due_and_not_before(stack, key, control):
    register(stack, key, "at-3s")
    send_at = db_now() + dt.timedelta(seconds=3)
    accepted = send_sms(stack, key, "at-3s", send_at=send_at.astimezone(policy.zone(ZONE)).isoformat())
    (delivery,) = accepted["deliveries"]
    assert (delivery["status"], delivery["reason"]) == ("scheduled", "scheduled")
    assert dt.datetime.fromisoformat(delivery["scheduled_for"].replace("Z", "+00:00")) == send_at

    # Until it is due, nothing reaches the provider and the row waits.
    while db_now() < send_at - dt.timedelta(seconds=0.3):
        assert sms_records(control, delivery["id"]) == []
        assert Delivery.objects.get(id=delivery["id"]).status == "scheduled"
        time.sleep(0.2)

    sent = wait_sent(delivery["id"])
    assert sent.sent_at >= send_at
    released = DeliveryLog.objects.get(delivery_id=delivery["id"], from_status="scheduled", to_status="queued")
    assert released.reason == "due" and released.at >= send_at
    time.sleep(2)  # a second release or send would show by now (the dispatcher runs every second)
    assert len(sms_records(control, delivery["id"])) == 1
    assert DeliveryLog.objects.filter(delivery_id=delivery["id"], to_status="sending").count() == 1


def test_a_cancelled_scheduled_send_never_goes(stack, key, control):
    register(stack, key, "cancel-me")
    send_at = db_now() + dt.timedelta(seconds=3)
    accepted = send_sms(stack, key, "cancel-me", send_at=send_at.isoformat())
    (delivery,) = accepted["deliveries"]
    status, body = demo.call(stack.api_url, key, "DELETE", f"/api/v1/notifications/{accepted['id']}")
    assert status == 200, body
    assert [(d["status"], d["reason"]) for d in body["deliveries"]] == [("cancelled", "cancelled")]
    assert body["cancelled"] == [delivery["id"]] and body["cancelled_at"]

    time.sleep((send_at - db_now()).total_seconds() + 3)
    assert sms_records(control, delivery["id"]) == []
    assert Delivery.objects.get(id=delivery["id"]).status == "cancelled"
    status, body = demo.call(stack.api_url, key, "DELETE", f"/api/v1/notifications/{accepted['id']}")
    assert status == 409 and body["error"]["code"] == "not_cancellable"


def test_a_scheduled_send_survives_a_restart_of_every_process_and_is_sent_once(stack, key, control):
    register(stack, key, "restart")
    send_at = db_now() + dt.timedelta(seconds=15)
    accepted = send_sms(stack, key, "restart", send_at=send_at.isoformat())
    (delivery,) = accepted["deliveries"]

    # Everything but the sandbox (which stands in for the providers) goes down before it is due
    # (the dispatcher first) and stays down past it: only PostgreSQL holds it.
    stack.stop_maintenance()
    assert db_now() < send_at
    stack.stop_relay()
    for channel in stack.config.channels:
        stack.stop_worker(channel)
    stack.stop_api()
    time.sleep(max(0.0, (send_at - db_now()).total_seconds()) + 2)
    row = Delivery.objects.get(id=delivery["id"])
    assert (row.status, row.next_attempt_at) == ("scheduled", send_at)
    assert sms_records(control, delivery["id"]) == []

    stack.start_api()
    stack.start_relay()
    for channel in stack.config.channels:
        stack.spawn_worker(channel)
    stack.start_maintenance()
    for channel in stack.config.channels:
        stack.wait_worker(channel)

    sent = wait_sent(delivery["id"])
    assert sent.sent_at >= send_at
    time.sleep(2)
    assert len(sms_records(control, delivery["id"])) == 1
    assert DeliveryLog.objects.filter(delivery_id=delivery["id"], from_status="scheduled",
                                      to_status="queued").count() == 1


def test_inside_quiet_hours_normal_waits_while_high_priority_and_required_go_at_once(stack, key, control):
    local = db_now().astimezone(policy.zone(ZONE))
    window = f"{local - dt.timedelta(hours=1):%H:%M}-{local + dt.timedelta(hours=2):%H:%M}"
    register(stack, key, "night-owl", quiet_hours=window)
    Category.objects.create(app=App.objects.get(name="schedule"), name="security", required=True)

    normal = send_sms(stack, key, "night-owl")["deliveries"][0]
    urgent = send_sms(stack, key, "night-owl", priority="high")["deliveries"][0]
    required = send_sms(stack, key, "night-owl", category="security")["deliveries"][0]
    assert (normal["status"], normal["reason"]) == ("scheduled", "quiet_hours")
    assert urgent["status"] == required["status"] == "queued"

    wait_sent(urgent["id"])
    wait_sent(required["id"])
    assert len(sms_records(control, urgent["id"])) == len(sms_records(control, required["id"])) == 1
    time.sleep(2)
    assert sms_records(control, normal["id"]) == []
    assert Delivery.objects.get(id=normal["id"]).status == "scheduled"
