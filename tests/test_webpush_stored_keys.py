"""A Web Push subscription stored before registration checked its keys (a p256dh off the P-256
curve) meets the real worker: the Web Push adapter classifies it as a dead address, so the
device is deactivated and the delivery fails once with a clear reason, instead of the task
raising "Invalid EC key" on every attempt until it is dead-lettered. The whole stack (API under
gunicorn, relay, Celery workers, the provider sandbox)."""

from __future__ import annotations

import base64

import pytest

from devtools import demo
from notify.models import FINAL_STATUSES, Delivery, DeliveryLog, Device, Recipient
from tests.conftest import wait_until

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

USER = "stored-keys"
PUSH = {"push": {"title": "Your order", "body": "is on its way"}}
REASON = "invalid_address:keys.p256dh:not_on_curve"


@pytest.fixture
def app_and_key(stack, transactional_db):
    return demo.create_app("stored-keys")


def off_the_curve(subscription: dict) -> dict:
    text = subscription["keys"]["p256dh"]
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    bad = base64.urlsafe_b64encode(raw[:-1] + bytes([raw[-1] ^ 1])).decode().rstrip("=")
    return {**subscription, "keys": {**subscription["keys"], "p256dh": bad}}


def send_and_wait(stack, key) -> dict:
    status, accepted = demo.call(stack.api_url, key, "POST", "/api/v1/notifications",
                                 {"recipient": USER, "content": PUSH})
    assert status == 202, accepted

    def final():
        _, body = demo.call(stack.api_url, key, "GET", f"/api/v1/notifications/{accepted['id']}")
        return body if all(d["status"] in FINAL_STATUSES for d in body["deliveries"]) else None

    return wait_until(final, timeout=30, message="the web push deliveries to finish")


def test_a_stored_key_off_the_curve_deactivates_its_device_once_without_an_exception(stack, app_and_key, control):
    app, key = app_and_key
    status, body = demo.call(stack.api_url, key, "PUT", f"/api/v1/recipients/{USER}", {"name": "Old device"})
    assert status == 201, body
    # The sandbox's push service listens on 127.0.0.1: registering with it is allowed by
    # configuration (NOTIFY_WEBPUSH_PRIVATE_ENDPOINTS from sandbox.json), any other loopback
    # endpoint is not.
    good = control.create_subscription()
    assert good["endpoint"].startswith("https://127.0.0.1:")
    status, body = demo.call(stack.api_url, key, "POST", f"/api/v1/recipients/{USER}/devices",
                             {"platform": "web", "subscription": good})
    assert status == 201, body
    status, body = demo.call(stack.api_url, key, "POST", f"/api/v1/recipients/{USER}/devices",
                             {"platform": "web", "subscription": {**good, "endpoint": "https://127.0.0.1:1/wp/x"}})
    assert (status, body["error"]["reasons"]) == (400, {"subscription.endpoint": ["private_address"]}), body

    # The API refuses the bad key now; the row below stands for one written before it did.
    bad = off_the_curve(control.create_subscription())
    status, body = demo.call(stack.api_url, key, "POST", f"/api/v1/recipients/{USER}/devices",
                             {"platform": "web", "subscription": bad})
    assert (status, body["error"]["reasons"]) == (400, {"subscription.keys.p256dh": ["not_on_curve"]}), body
    recipient = Recipient.objects.get(app=app, external_id=USER)
    stored = Device.objects.create(app=app, recipient=recipient, platform="web", token=bad["endpoint"],
                                   subscription=bad)

    final = send_and_wait(stack, key)
    by_device = {Delivery.objects.get(id=d["id"]).device_id: d for d in final["deliveries"]}
    assert set(by_device) == {stored.id, Device.objects.get(token=good["endpoint"]).id}
    failed = by_device[stored.id]
    assert (failed["status"], failed["reason"], failed["attempts"]) == ("failed", REASON, 1), failed
    assert by_device[Device.objects.get(token=good["endpoint"]).id]["status"] == "sent"

    stored.refresh_from_db()
    assert (stored.active, stored.deactivated_reason) == (False, REASON)
    # One attempt, straight to failed: no retry, no dead letter.
    assert list(DeliveryLog.objects.filter(delivery_id=failed["id"]).values_list("to_status", flat=True)
                .order_by("id")).count("failed") == 1
    assert not DeliveryLog.objects.filter(delivery_id=failed["id"], to_status__in=("retrying", "dead_lettered")).exists()
    # Nothing went to the push service for it, and the worker raised nothing.
    assert control.records("webpush", to=bad["endpoint"]) == []
    assert len(control.records("webpush", to=good["endpoint"], accepted=True)) == 1
    log = (stack.config.log_dir / "worker-webpush.log").read_text(errors="replace")
    assert "Invalid EC key" not in log and "Traceback" not in log

    # The next send skips the deactivated device.
    again = send_and_wait(stack, key)
    assert [Delivery.objects.get(id=d["id"]).device_id for d in again["deliveries"]] == [
        Device.objects.get(token=good["endpoint"]).id]
