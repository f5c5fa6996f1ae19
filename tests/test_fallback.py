"""Channel fallback (``"fallback": ["push", "sms"]``): the next step is tried only when every
delivery of the one before ended without being sent, exactly once, and the notification says
which channel delivered. End to end on the running stack (real API, relay, workers, provider
sandbox); the API's validation and the advance itself are in tests/stages/test_fallback_steps.py
(without workers, which would send the rows those tests look at)."""

from __future__ import annotations

import secrets
import time

import pytest

from devtools import demo
from notify.models import FINAL_STATUSES, REACHED_PROVIDER, DeliveryLog, Device
from tests.conftest import wait_until

FINAL = FINAL_STATUSES
PUSH_AND_SMS = {"push": {"title": "Your table is ready", "body": "Come to the front desk"},
                "sms": {"body": "Your table is ready: come to the front desk"}}


# -- end to end ----------------------------------------------------------------------------------
@pytest.fixture
def key(stack, transactional_db):
    return demo.create_app("fallback")[1]


def register(stack, key, user: str, phone: str, ios_token: str | None = None) -> None:
    status, body = demo.call(stack.api_url, key, "PUT", f"/api/v1/recipients/{user}", {"phone": phone})
    assert status in (200, 201), body
    if ios_token:
        status, body = demo.call(stack.api_url, key, "POST", f"/api/v1/recipients/{user}/devices",
                                 {"platform": "ios", "token": ios_token})
        assert status == 201, body


def send(stack, key, user: str) -> dict:
    status, body = demo.call(stack.api_url, key, "POST", "/api/v1/notifications",
                             {"recipient": user, "content": PUSH_AND_SMS, "fallback": ["push", "sms"]})
    assert status == 202, body
    return body


def wait_final(stack, key, notification_id: str) -> dict:
    def done():
        _, body = demo.call(stack.api_url, key, "GET", f"/api/v1/notifications/{notification_id}")
        return body if all(d["status"] in FINAL for d in body["deliveries"]) else None

    return wait_until(done, timeout=30, message=f"deliveries of {notification_id} to finish")


def by_channel(deliveries: list[dict]) -> dict[str, dict]:
    return {d["channel"]: d for d in deliveries}


@pytest.mark.stack
def test_a_dead_ios_token_falls_back_to_one_sms(stack, key, control):
    token, phone = secrets.token_hex(32), "+14155550161"
    register(stack, key, "fb-dead", phone, token)
    control.kill_token("apns", token)

    body = send(stack, key, "fb-dead")
    accepted = by_channel(body["deliveries"])
    assert (accepted["apns"]["status"], accepted["apns"]["step"]) == ("queued", 0)
    assert {accepted[c]["reason"] for c in ("fcm", "webpush")} == {"no_device"}
    assert (accepted["sms"]["status"], accepted["sms"]["reason"], accepted["sms"]["step"]) == ("standby", "fallback", 1)

    final = wait_final(stack, key, body["id"])
    deliveries = by_channel(final["deliveries"])
    assert (deliveries["apns"]["status"], deliveries["apns"]["reason"]) == ("failed", "Unregistered")
    assert deliveries["sms"]["status"] in REACHED_PROVIDER and deliveries["sms"]["step"] == 1
    assert final["delivered_by"] == "sms"
    assert final["fallback"][1] == ["sms"] and "apns" in final["fallback"][0]
    assert not Device.objects.get(token=token).active

    time.sleep(1.5)  # a second SMS would come from a second advance: give it the time to arrive
    (record,) = control.records("twilio", to=phone, accepted=True)
    assert record["delivery_id"] == deliveries["sms"]["id"]
    assert len(control.inbox("twilio", to=phone)) == 1
    log = list(DeliveryLog.objects.filter(delivery_id=deliveries["sms"]["id"]).values_list("from_status", "to_status",
                                                                                             "reason"))
    assert log[0] == ("standby", "queued", "fallback")


@pytest.mark.stack
def test_a_working_device_gets_the_push_and_no_sms(stack, key, control):
    phone = "+14155550162"
    register(stack, key, "fb-ok", phone, secrets.token_hex(32))

    final = wait_final(stack, key, send(stack, key, "fb-ok")["id"])
    deliveries = by_channel(final["deliveries"])
    assert deliveries["apns"]["status"] in REACHED_PROVIDER
    assert (deliveries["sms"]["status"], deliveries["sms"]["reason"]) == ("suppressed", "fallback_not_needed")
    assert final["delivered_by"] == "apns"
    time.sleep(1)
    assert control.records("twilio", to=phone) == []


@pytest.mark.stack
def test_without_a_device_the_sms_is_queued_at_once(stack, key, control):
    phone = "+14155550163"
    register(stack, key, "fb-none", phone)

    accepted = send(stack, key, "fb-none")
    steps = {d["channel"]: (d["status"], d["step"]) for d in accepted["deliveries"]}
    assert steps["sms"] == ("queued", 1)
    assert {steps[c] for c in ("apns", "fcm", "webpush")} == {("suppressed", 0)}
    final = wait_final(stack, key, accepted["id"])
    assert final["delivered_by"] == "sms"
    assert len(control.records("twilio", to=phone, accepted=True)) == 1
