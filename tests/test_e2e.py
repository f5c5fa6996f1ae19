"""End to end: real HTTP calls to the API (gunicorn), real Celery workers on real RabbitMQ
queues, the providers' real client libraries, and the sandbox's records as proof of what went
over each provider's wire."""

from __future__ import annotations

import json
import secrets
import time

import jwt
import pytest

from devtools import demo
from notify.models import FINAL_STATUSES, REACHED_PROVIDER, Delivery
from tests.conftest import wait_until

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

FINAL = FINAL_STATUSES


@pytest.fixture
def key(stack, transactional_db):
    return demo.create_app("e2e")[1]


def register(stack, key, control, user: str, *, phone="+821012345678", email="jiwoo.kim@example.com",
             platforms=("ios", "android", "web")) -> dict:
    status, body = demo.call(stack.api_url, key, "PUT", f"/api/v1/recipients/{user}",
                             {"name": "김지우", "locale": "ko-KR", "timezone": "Asia/Seoul", "email": email, "phone": phone})
    assert status in (200, 201), body
    devices = {}
    for platform in platforms:
        if platform == "ios":
            device = {"platform": "ios", "token": secrets.token_hex(32)}
        elif platform == "android":
            device = {"platform": "android", "token": demo.fcm_token()}
        else:
            device = {"platform": "web", "subscription": control.create_subscription()}
        status, body = demo.call(stack.api_url, key, "POST", f"/api/v1/recipients/{user}/devices", device)
        assert status == 201, body
        devices[platform] = body
    return devices


def wait_final(stack, key, notification_id: str, timeout: float = 30) -> dict:
    def done():
        _, body = demo.call(stack.api_url, key, "GET", f"/api/v1/notifications/{notification_id}")
        return body if all(d["status"] in FINAL for d in body["deliveries"]) else None

    return wait_until(done, timeout=timeout, message=f"deliveries of {notification_id} to finish")


def by_delivery(records: list[dict]) -> dict[str, dict]:
    return {r["delivery_id"]: r for r in records if r.get("accepted")}


def test_one_api_call_reaches_ios_android_desktop_sms_and_email(stack, key, control):
    devices = register(stack, key, control, "kim")
    status, accepted = demo.call(stack.api_url, key, "POST", "/api/v1/notifications", {
        "recipient": "kim", "template": "order-shipped", "priority": "high",
        "data": {"name": "지우", "order": "A-1042"}}, headers={"Idempotency-Key": "order-A-1042-shipped"})
    assert status == 202, accepted
    assert {d["channel"] for d in accepted["deliveries"]} == {"apns", "fcm", "webpush", "sms", "email"}

    final = wait_final(stack, key, accepted["id"])
    assert {d["status"] for d in final["deliveries"]} <= REACHED_PROVIDER, final
    assert all(d["provider_message_id"] for d in final["deliveries"])
    ids = {d["channel"]: d["id"] for d in final["deliveries"]}
    title = "지우님, 주문이 발송되었어요 📦"

    apns = by_delivery(control.records("apns"))[ids["apns"]]
    assert apns["http_version"].startswith("2")
    assert apns["path"] == f"/3/device/{devices['ios']['token']}"
    assert apns["headers"]["apns-topic"] == control.config()["apns"]["topic"]
    assert apns["headers"]["apns-id"] == ids["apns"]
    assert apns["headers"]["apns-priority"] == "10" and apns["headers"]["apns-push-type"] == "alert"
    claims = jwt.decode(apns["headers"]["authorization"].split()[1], options={"verify_signature": False})
    assert claims["iss"] == control.config()["apns"]["team_id"]
    assert apns["body"]["aps"]["alert"] == {"title": title, "body": "Order A-1042 ships today. 오늘 출발합니다!"}

    fcm = by_delivery(control.records("fcm"))[ids["fcm"]]
    assert fcm["headers"]["authorization"].startswith("Bearer ")
    message = fcm["body"]["message"]
    assert message["token"] == devices["android"]["token"]
    assert message["notification"]["title"] == title
    assert all(isinstance(v, str) for v in message["data"].values()) and message["data"]["order"] == "A-1042"
    assert message["android"]["priority"] == "HIGH"

    webpush = by_delivery(control.records("webpush"))[ids["webpush"]]
    plaintext = json.loads(webpush["extra"]["plaintext"])
    assert plaintext["title"] == title and plaintext["notify_delivery_id"] == ids["webpush"]
    assert webpush["headers"]["content-encoding"] == "aes128gcm"

    sms = by_delivery(control.records("twilio"))[ids["sms"]]
    assert sms["body"]["To"] == "+821012345678"
    assert sms["body"]["Body"] == "[notify] 지우님, 주문 A-1042 발송 완료 📦"
    assert sms["extra"]["encoding"] == "UCS-2"

    email = by_delivery(control.records("ses"))[ids["email"]]
    assert email["to"] == "jiwoo.kim@example.com"
    simple = email["body"]["Content"]["Simple"]
    assert simple["Subject"]["Data"] == "Your order A-1042 has shipped / 주문 발송 안내"
    assert "감사합니다 🙏" in simple["Body"]["Text"]["Data"]
    assert email["body"]["FromEmailAddress"] == control.config()["ses"]["from_address"]


def test_sms_to_several_countries_and_an_internationalised_email(stack, key, control):
    phones = ["+14155550123", "+447911123456", "+819012345678", "+34612345678"]
    notification_ids = []
    for i, phone in enumerate(phones):
        register(stack, key, control, f"intl-{i}", phone=phone, email=f"jose{i}@exämple.es", platforms=())
        status, body = demo.call(stack.api_url, key, "POST", "/api/v1/notifications", {
            "recipient": f"intl-{i}", "content": {"sms": {"body": "Hello 👋 ¡hola! こんにちは"},
                                                  "email": {"subject": "Olá", "text": "Ça va? 🙂"}}})
        assert status == 202, body
        notification_ids.append(body["id"])
    for notification_id in notification_ids:
        final = wait_final(stack, key, notification_id)
        assert {d["status"] for d in final["deliveries"]} <= REACHED_PROVIDER, final
    sent_to = {r["body"]["To"] for r in control.records("twilio") if r.get("accepted")}
    assert set(phones) <= sent_to
    # The internationalised domain reaches SES in its punycode form, as SES requires.
    mailed_to = {r["to"] for r in control.records("ses") if r.get("accepted")}
    assert {f"jose{i}@xn--exmple-cua.es" for i in range(len(phones))} <= mailed_to


def test_opted_out_channel_is_not_sent(stack, key, control):
    register(stack, key, control, "quiet", platforms=("ios",))
    status, _ = demo.call(stack.api_url, key, "PUT", "/api/v1/recipients/quiet/preferences",
                          {"preferences": [{"channel": "email", "enabled": False}]})
    assert status == 200
    status, accepted = demo.call(stack.api_url, key, "POST", "/api/v1/notifications", {
        "recipient": "quiet", "template": "order-shipped", "data": {"name": "Q", "order": "1"}})
    email = next(d for d in accepted["deliveries"] if d["channel"] == "email")
    assert (email["status"], email["reason"]) == ("suppressed", "opted_out")
    final = wait_final(stack, key, accepted["id"])
    statuses = {d["channel"]: d["status"] for d in final["deliveries"]}
    assert statuses["email"] == "suppressed" and {statuses["apns"], statuses["sms"]} <= REACHED_PROVIDER, statuses
    assert not [r for r in control.records("ses") if r.get("delivery_id") == email["id"]]


def test_channels_are_isolated_when_the_sms_workers_are_stopped(stack, key, control):
    register(stack, key, control, "iso")
    stack.stop_worker("sms")
    try:
        started = time.monotonic()
        status, accepted = demo.call(stack.api_url, key, "POST", "/api/v1/notifications", {
            "recipient": "iso", "template": "order-shipped", "data": {"name": "I", "order": "2"}})
        assert status == 202

        def others_sent():
            rows = dict(Delivery.objects.filter(notification_id=accepted["id"]).values_list("channel", "status"))
            return rows if all(s in REACHED_PROVIDER for c, s in rows.items() if c != "sms") else None

        rows = wait_until(others_sent, timeout=10, message="push and email while SMS workers are down")
        assert time.monotonic() - started < 10
        assert rows["sms"] == "queued"
    finally:
        stack.start_worker("sms")
    wait_until(lambda: Delivery.objects.get(notification_id=accepted["id"], channel="sms").status in REACHED_PROVIDER,
               timeout=30, message="the SMS delivery once its workers are back")


def test_twilio_status_callbacks_move_an_sms_to_delivered(stack, key, control):
    """The sandbox's Twilio calls the status callback URL the worker gave it (``sent``, then
    ``delivered``, signed): the delivery ends ``delivered`` with both events in the API."""
    register(stack, key, control, "lee", phone="+821055501234", platforms=())
    status, accepted = demo.call(stack.api_url, key, "POST", "/api/v1/notifications",
                                 {"recipient": "lee", "channels": ["sms"], "content": {"sms": {"body": "배송 완료"}}})
    assert status == 202, accepted

    def delivered():
        _, body = demo.call(stack.api_url, key, "GET", f"/api/v1/notifications/{accepted['id']}")
        return body if body["deliveries"][0]["status"] == "delivered" else None

    body = wait_until(delivered, timeout=30, message="the SMS to be reported delivered")
    assert [e["kind"] for e in body["deliveries"][0]["events"]] == ["sent", "delivered"]
    assert body["delivered_by"] == "sms"
