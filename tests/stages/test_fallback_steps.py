"""Channel fallback, without workers: the API's validation of ``fallback``, the rows accept
writes for each step, and the advance from one step to the next (notify.store.advance_fallback
through notify.send's outcome recording) under concurrency. End to end: tests/test_fallback.py."""

from __future__ import annotations

import secrets
import threading

import pytest
from django.db import connection

from notify import send as send_module
from notify import store
from notify.models import Delivery, DeliveryLog, Notification, cannot_deliver
from tests.helpers import db_counts

PUSH_AND_SMS = {"push": {"title": "Your table is ready", "body": "Come to the front desk"},
                "sms": {"body": "Your table is ready: come to the front desk"}}


# -- the API's validation -----------------------------------------------------------------------
@pytest.mark.parametrize("body, code, fields", [
    ({"fallback": ["push", "pigeon"]}, 400, {"fallback"}),
    ({"fallback": ["sms", "sms"]}, 400, {"fallback"}),
    ({"fallback": ["push", "apns"]}, 400, {"fallback"}),
    ({"fallback": ["sms"]}, 400, {"fallback"}),
    ({"fallback": ["push", "sms"], "channels": ["sms"]}, 400, {"fallback", "channels"}),
    ({"fallback": ["push", "sms", "email"]}, 422, {"fallback"}),  # no email content
], ids=["unknown", "duplicate", "group-and-its-channel", "one-step", "with-channels", "no-content-for-a-step"])
def test_a_bad_fallback_is_refused_and_nothing_is_written(api, body, code, fields):
    api.put("/api/v1/recipients/fb-bad", {"phone": "+14155550164", "email": "fb@example.com"}, format="json")
    before = db_counts()
    r = api.post("/api/v1/notifications", {"recipient": "fb-bad", "content": PUSH_AND_SMS, **body}, format="json")
    assert r.status_code == code, r.content
    assert {name.split(".")[0] for name in r.json()["error"]["fields"]} == fields, r.json()
    assert db_counts() == before


def test_the_steps_are_stored_and_a_later_steps_rows_wait_on_standby(api, transactional_db):
    api.put("/api/v1/recipients/fb-store", {"phone": "+14155550165", "email": "fb@example.com"}, format="json")
    r = api.post("/api/v1/notifications", {"recipient": "fb-store", "fallback": ["sms", "email"],
                                           "content": {**PUSH_AND_SMS, "email": {"subject": "s", "text": "t"}}},
                 format="json")
    assert r.status_code == 202, r.content
    notification = Notification.objects.get(id=r.json()["id"])
    assert notification.fallback == [["sms"], ["email"]]
    rows = {d.channel: (d.status, d.reason, d.step) for d in notification.deliveries.all()}
    assert rows == {"sms": ("queued", "", 0), "email": ("standby", "fallback", 1)}  # push is not in the fallback


# -- the store's advance -------------------------------------------------------------------------
def _accept_two_devices(api, user: str, fallback: list[str]) -> tuple[Notification, list[Delivery]]:
    api.put(f"/api/v1/recipients/{user}", {"phone": "+14155550166", "email": "fb2@example.com"}, format="json")
    for _ in range(2):
        api.post(f"/api/v1/recipients/{user}/devices", {"platform": "ios", "token": secrets.token_hex(32)},
                 format="json")
    r = api.post("/api/v1/notifications", {"recipient": user, "fallback": fallback,
                                           "content": {**PUSH_AND_SMS, "email": {"subject": "s", "text": "t"}}},
                 format="json")
    assert r.status_code == 202, r.content
    notification = Notification.objects.get(id=r.json()["id"])
    return notification, list(notification.deliveries.filter(channel="apns"))


def _fail_concurrently(deliveries: list[Delivery]) -> None:
    """Claim the deliveries, then record each ``failed`` at the same instant on its own
    connection, as two workers do (notify.send records and advances in one transaction)."""
    claims = [send_module.claim(str(d.id)) for d in deliveries]
    barrier = threading.Barrier(len(claims))

    def worker(claim) -> None:
        try:
            barrier.wait(5)
            send_module._record(claim, "failed", "Unregistered")
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(c,)) for c in claims]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)


def test_two_deliveries_of_a_step_failing_at_once_advance_it_exactly_once(api, transactional_db):
    for attempt in range(10):
        notification, apns = _accept_two_devices(api, f"fb-race-{attempt}", ["push", "sms", "email"])
        assert len(apns) == 2
        _fail_concurrently(apns)
        assert {d.status for d in notification.deliveries.filter(channel="apns")} == {"failed"}
        rows = {d.channel: d.status for d in notification.deliveries.exclude(channel__in=["apns"])
                if d.step > 0}
        assert rows == {"sms": "queued", "email": "standby"}
        sms = notification.deliveries.get(channel="sms")
        assert list(DeliveryLog.objects.filter(delivery=sms).values_list("from_status", "to_status")) == [
            ("standby", "queued")]


def test_the_advance_waits_for_the_whole_step_and_is_idempotent(api, transactional_db):
    notification, (first, second) = _accept_two_devices(api, "fb-idem", ["push", "sms", "email"])
    Delivery.objects.filter(id=first.id).update(status="failed")
    assert store.advance_fallback(notification.id, 0, store.FALLBACK_NEXT) == 0  # the other device is still queued
    Delivery.objects.filter(id=second.id).update(status="failed")
    assert store.advance_fallback(notification.id, 0, store.FALLBACK_NEXT) == 1
    # Repeated (a retry after a database outage): the sms step has started, nothing more moves,
    # and not the email step either.
    assert store.advance_fallback(notification.id, 0, store.FALLBACK_NEXT) == 0
    assert notification.deliveries.get(channel="email").status == "standby"
    # The sms ends unsent (opted out since): the email goes.
    notification.deliveries.filter(channel="sms").update(status="suppressed", reason="opted_out")
    assert store.advance_fallback(notification.id, 1, store.FALLBACK_NEXT) == 1
    assert store.advance_fallback(notification.id, 1, store.FALLBACK_NEXT) == 0
    assert notification.deliveries.get(channel="email").status == "queued"


def test_a_sent_delivery_stands_the_later_steps_down_and_one_sent_blocks_the_advance(api, transactional_db):
    notification, (first, second) = _accept_two_devices(api, "fb-sent", ["push", "sms", "email"])
    Delivery.objects.filter(id=first.id).update(status="sent")
    assert store.advance_fallback(notification.id, 0, store.FALLBACK_DONE) == 2
    Delivery.objects.filter(id=second.id).update(status="failed")
    assert store.advance_fallback(notification.id, 0, store.FALLBACK_NEXT) == 0
    later = {d.channel: (d.status, d.reason) for d in notification.deliveries.filter(step__gt=0)}
    assert later == {"sms": ("suppressed", "fallback_not_needed"), "email": ("suppressed", "fallback_not_needed")}


def test_a_cancelled_notification_does_not_advance(api, transactional_db):
    notification, apns = _accept_two_devices(api, "fb-cancel", ["push", "sms"])
    Notification.objects.filter(id=notification.id).update(cancelled_at=notification.created_at)
    Delivery.objects.filter(id__in=[d.id for d in apns]).update(status="failed")
    assert store.advance_fallback(notification.id, 0, store.FALLBACK_NEXT) == 0
    assert notification.deliveries.get(channel="sms").status == "standby"


# -- which ends let the next channel go ----------------------------------------------------------
@pytest.mark.parametrize("status, reason, moves_on", [
    ("suppressed", "no_device", True), ("suppressed", "no_address", True), ("suppressed", "opted_out", True),
    ("suppressed", "device_removed", True), ("failed", "Unregistered", True), ("failed", "device_inactive", True),
    ("failed", "outcome_unknown", False), ("failed", "outcome_unknown:InternalServerError", False),
    ("suppressed", "rate_limited", False), ("suppressed", "muted", False), ("expired", "ttl_elapsed", False),
    ("dead_lettered", "max_attempts", False), ("cancelled", "", False),
])
def test_only_an_end_that_shows_the_channel_cannot_deliver_moves_the_fallback_on(status, reason, moves_on):
    assert cannot_deliver(status, reason) is moves_on


@pytest.mark.parametrize("status, reason", [
    ("failed", "outcome_unknown:InternalServerError"), ("expired", "ttl_elapsed"), ("suppressed", "rate_limited"),
    ("dead_lettered", "max_attempts"),
], ids=["outcome-unknown", "expired", "rate-limited", "dead-lettered"])
def test_a_step_ending_so_that_another_channel_could_double_it_stands_the_later_steps_down(
        api, transactional_db, status, reason):
    """Through notify.send's outcome recording: the SMS and the email never go, even once the
    step's other device fails for good, and they say why."""
    notification, (first, second) = _accept_two_devices(api, f"fb-stop-{status}", ["push", "sms", "email"])
    send_module._record(send_module.claim(str(first.id)), status, reason)
    send_module._record(send_module.claim(str(second.id)), "failed", "Unregistered")
    later = {d.channel: (d.status, d.reason) for d in notification.deliveries.filter(step__gt=0)}
    assert later == {"sms": ("suppressed", "fallback_stopped"), "email": ("suppressed", "fallback_stopped")}


def test_a_permanent_failure_of_every_device_moves_on_through_the_send_path(api, transactional_db):
    notification, (first, second) = _accept_two_devices(api, "fb-next", ["push", "sms", "email"])
    send_module._record(send_module.claim(str(first.id)), "suppressed", "opted_out")
    send_module._record(send_module.claim(str(second.id)), "failed", "BadDeviceToken")
    later = {d.channel: d.status for d in notification.deliveries.filter(step__gt=0)}
    assert later == {"sms": "queued", "email": "standby"}
