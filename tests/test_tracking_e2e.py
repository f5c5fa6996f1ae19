"""Tracking end to end: an email with a link sent through the API (gunicorn), the relay and a
Celery worker to the SES sandbox; its recorded HTML carries the redirected link and the pixel;
following them on the API server records ``opened`` and ``clicked``, which
``GET /api/v1/notifications/<id>`` then shows. A Web Push's signed ``open_url`` and the API's
open report do the same for push, and another app's key is refused."""

from __future__ import annotations

import json
import re
import secrets

import pytest
import requests

from devtools import demo
from notify.models import REACHED_PROVIDER
from tests.conftest import wait_until

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

TARGET = "https://shop.example.com/orders/A-1042?utm_source=mail&step=2"
BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"}


@pytest.fixture
def key(stack, transactional_db):
    return demo.create_app("tracking-e2e")[1]


def accept(stack, key, body: dict) -> dict:
    status, answer = demo.call(stack.api_url, key, "POST", "/api/v1/notifications", body)
    assert status == 202, answer
    return answer


def notification(stack, key, notification_id: str) -> dict:
    status, body = demo.call(stack.api_url, key, "GET", f"/api/v1/notifications/{notification_id}")
    assert status == 200, body
    return body


def test_an_emailed_link_and_pixel_followed_on_the_api_server_show_as_events(stack, key, control):
    user = f"t-{secrets.token_hex(4)}"
    status, body = demo.call(stack.api_url, key, "PUT", f"/api/v1/recipients/{user}",
                             {"email": f"{user}@example.com"})
    assert status == 201, body
    html = f'<html><body><p>Your <a href="{TARGET.replace("&", "&amp;")}">order</a> ships today.</p></body></html>'
    accepted = accept(stack, key, {"recipient": user, "channels": ["email"],
                                   "content": {"email": {"subject": "Shipped", "text": "Ships today.", "html": html}}})
    delivery_id = accepted["deliveries"][0]["id"]
    (record,) = wait_until(lambda: control.records("ses", delivery_id=delivery_id, accepted=True), timeout=30,
                           message="the email at the SES sandbox")
    sent = record["extra"]["html"]
    click = re.search(rf'<a href="({re.escape(stack.api_url)}/t/c/[^"]+)">order</a>', sent).group(1)
    pixel = re.search(rf'<img src="({re.escape(stack.api_url)}/t/o/[^"]+\.gif)"', sent).group(1)
    assert TARGET.replace("&", "&amp;") not in sent

    image = requests.get(pixel, headers=BROWSER, timeout=10)
    assert image.status_code == 200 and image.headers["Content-Type"] == "image/gif"
    assert image.content.startswith(b"GIF89a") and "no-store" in image.headers["Cache-Control"]
    redirect = requests.get(click, headers=BROWSER, allow_redirects=False, timeout=10)
    assert redirect.status_code == 302 and redirect.headers["Location"] == TARGET
    # Followed again (a second tab): still redirected, not counted again.
    assert requests.get(click, headers=BROWSER, allow_redirects=False, timeout=10).headers["Location"] == TARGET

    # The worker may still be writing the provider's answer: it adopts the events when it does.
    delivery = wait_until(lambda: (d := notification(stack, key, accepted["id"])["deliveries"][0])["status"]
                          == "clicked" and d, timeout=30, message="the delivery to show its click")
    assert sorted(e["kind"] for e in delivery["events"]) == ["clicked", "opened"]


def test_a_web_push_open_is_reported_by_its_signed_url_or_by_the_app_and_never_by_another_app(stack, key, control):
    user = f"p-{secrets.token_hex(4)}"
    status, body = demo.call(stack.api_url, key, "PUT", f"/api/v1/recipients/{user}", {"locale": "en"})
    assert status == 201, body
    status, body = demo.call(stack.api_url, key, "POST", f"/api/v1/recipients/{user}/devices",
                             {"platform": "web", "subscription": control.create_subscription()})
    assert status == 201, body
    ids = []
    for title in ("First", "Second"):
        accepted = accept(stack, key, {"recipient": user, "channels": ["webpush"],
                                       "content": {"push": {"title": title, "body": "Hello"}}})
        ids.append((accepted["id"], accepted["deliveries"][0]["id"]))
    records = {}
    for _, delivery_id in ids:
        (records[delivery_id],) = wait_until(
            lambda: control.records("webpush", delivery_id=delivery_id, accepted=True), timeout=30,
            message="the push at the Web Push sandbox")

    # The service worker: the decrypted payload's open_url, POSTed without a key.
    (first_notification, first), (second_notification, second) = ids
    payload = json.loads(records[first]["extra"]["plaintext"])
    assert payload["notify_delivery_id"] == first and payload["open_url"].startswith(f"{stack.api_url}/t/p/")
    answer = requests.post(payload["open_url"], timeout=10)
    assert answer.status_code == 200 and answer.json() == {"recorded": True}

    # The app's backend, with its key; another app's key is a 404 and changes nothing.
    other_key = demo.create_app("tracking-e2e-other")[1]
    status, body = demo.call(stack.api_url, other_key, "POST", f"/api/v1/deliveries/{second}/opened")
    assert status == 404 and body["error"]["code"] == "not_found"
    wait_until(lambda: notification(stack, key, second_notification)["deliveries"][0]["status"] in REACHED_PROVIDER,
               timeout=30, message="the second push's outcome")
    assert notification(stack, key, second_notification)["deliveries"][0]["events"] == []
    status, body = demo.call(stack.api_url, key, "POST", f"/api/v1/deliveries/{second}/opened")
    assert status == 200 and body["recorded"] is True and body["status"] == "opened"
    status, body = demo.call(stack.api_url, key, "POST", f"/api/v1/deliveries/{first}/opened")
    assert status == 200 and body["recorded"] is False  # the service worker reported it already

    for notification_id in (first_notification, second_notification):
        delivery = wait_until(lambda: (d := notification(stack, key, notification_id)["deliveries"][0])["status"]
                              == "opened" and d, timeout=30, message="the delivery to show its open")
        assert [e["kind"] for e in delivery["events"]] == ["opened"]
