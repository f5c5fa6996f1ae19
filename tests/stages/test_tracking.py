"""Opens, clicks and unsubscribes as delivery events (notify.tracking, notify.tracking_views,
``POST /api/v1/deliveries/<id>/opened``, notify.unsubscribe): the worker's send runs in this
process against the stage sandbox, the sandbox's record of the mail or push is what went over
the provider's wire, and its links are followed through Django's test client."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import zlib

import pytest
from django.core import signing
from rest_framework.test import APIClient

from devtools import demo
from notify import send, tracking
from notify.models import App, Delivery, DeliveryEvent, Preference
from notify.tracking_views import PIXEL

pytestmark = pytest.mark.django_db(transaction=True)

TARGET = "https://shop.example.com/orders/A-1042?utm_source=mail&step=2#track"
HTML = (f'<html><body><p>Hi, <a href="{TARGET.replace("&", "&amp;")}">your order</a>, '
        '<a href="mailto:help@example.com">help</a>, <a href="#details">details</a>.</p></body></html>')
BROWSER = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
           "Version/17.5 Safari/605.1.15")
CLICK = re.compile(r'href="https?://[^/"]+(/t/c/[^"]+)"')
PIXEL_SRC = re.compile(r'<img src="https?://[^/"]+(/t/o/[^"]+\.gif)"')


@pytest.fixture
def ana(api):
    r = api.put("/api/v1/recipients/ana", {"email": "ana@example.com"}, format="json")
    assert r.status_code in (200, 201), r.content


def send_email(api, ctl, category: str = "general", html: str = HTML) -> tuple[str, dict]:
    """Accept and send one email to ana; returns its delivery id and the sandbox's record of it
    (``extra.html``: the HTML part as SES received it)."""
    r = api.post("/api/v1/notifications", {"recipient": "ana", "category": category, "channels": ["email"],
                                           "content": {"email": {"subject": "Shipped", "text": "On its way.",
                                                                 "html": html}}}, format="json")
    assert r.status_code == 202, r.content
    delivery_id = r.json()["deliveries"][0]["id"]
    assert send.send(delivery_id) == "sent"
    (record,) = ctl.records("ses", delivery_id=delivery_id, accepted=True)
    return delivery_id, record["extra"]


def links(html: str) -> tuple[str, str]:
    """The click redirect's and the pixel's paths in a sent HTML part."""
    return CLICK.search(html).group(1), PIXEL_SRC.search(html).group(1)


def events(delivery_id: str) -> list[str]:
    return sorted(DeliveryEvent.objects.filter(delivery_id=delivery_id).values_list("kind", flat=True))


def status(delivery_id: str) -> str:
    return Delivery.objects.get(id=delivery_id).status


def human(client, path: str, method: str = "get"):
    return getattr(client, method)(path, HTTP_USER_AGENT=BROWSER)


# --- the sent mail ------------------------------------------------------------------------------

def test_the_sent_html_has_its_web_links_redirected_and_the_pixel_and_the_redirect_leads_to_the_target(
        api, ana, ctl, client):
    delivery_id, mail = send_email(api, ctl)
    html = mail["html"]
    click, pixel = links(html)
    assert len(CLICK.findall(html)) == 1  # only the https link; mailto:, the anchor and the footer stay
    assert '<a href="mailto:help@example.com">help</a>' in html and '<a href="#details">details</a>' in html
    assert re.search(r'<a href="http://[^"]+/preferences/[^"]+">Manage your notification preferences</a>', html)
    assert html.index("/t/o/") < html.index("notify-preferences") < html.index("</body>")
    assert mail["text"].startswith("On its way.") and "/t/" not in mail["text"]

    redirect = human(client, click)
    assert redirect.status_code == 302 and redirect["Location"] == TARGET
    assert redirect["Referrer-Policy"] == "no-referrer" and "no-store" in redirect["Cache-Control"]
    image = human(client, pixel)
    assert image.status_code == 200 and image["Content-Type"] == "image/gif" and image.content == PIXEL
    assert image.content[:6] == b"GIF89a" and image.content[6:10] == b"\x01\x00\x01\x00"
    assert "no-cache" in image["Cache-Control"] and "no-store" in image["Cache-Control"]
    assert image["Pragma"] == "no-cache"
    got = api.get(f"/api/v1/notifications/{Delivery.objects.get(id=delivery_id).notification_id}").json()
    (delivery,) = got["deliveries"]
    assert delivery["status"] == "clicked" and {e["kind"] for e in delivery["events"]} == {"opened", "clicked"}


def _altered(token: str, **changes) -> str:
    """The token with its signed value changed and its signature kept (Django's format:
    ``[.]base64(json):signature``, the dot marking a zlib-compressed value)."""
    payload, signature = token.rsplit(":", 1)
    raw = signing.b64_decode(payload.lstrip(".").encode())
    if payload.startswith("."):
        raw = zlib.decompress(raw)
    data = {**json.loads(raw), **changes}
    return f"{signing.b64_encode(json.dumps(data, separators=(',', ':')).encode()).decode()}:{signature}"


def test_a_forged_or_altered_tracking_link_is_refused_and_records_nothing(api, ana, ctl, client):
    delivery_id, mail = send_email(api, ctl)
    click, pixel = links(mail["html"])
    click_token, pixel_token = click.rsplit("/", 1)[1], pixel.rsplit("/", 1)[1][:-len(".gif")]
    other_id, _ = send_email(api, ctl)
    forged = [
        f"/t/c/{_altered(click_token, u='https://evil.example/phish')}",  # another target
        f"/t/c/{_altered(click_token, d=other_id.replace('-', ''))}",  # another delivery
        f"/t/c/{click_token[:-2]}",  # a cut signature
        f"/t/c/{pixel_token}",  # an open token is not a click token
        "/t/c/" + signing.Signer(key="not-our-secret", salt="notify.tracking.click").sign_object(
            {"d": delivery_id.replace("-", ""), "t": int(time.time()), "u": "https://evil.example/"}),
        "/t/c/nonsense",
        f"/t/o/{_altered(pixel_token, d=other_id.replace('-', ''))}.gif",
        f"/t/o/{click_token}.gif",
        "/t/o/nonsense.gif",
        "/t/p/" + signing.Signer(salt="notify.tracking.open").sign(delivery_id.replace("-", "")),
    ]
    for path in forged:
        method = "post" if path.startswith("/t/p/") else "get"
        answer = human(client, path, method)
        assert answer.status_code == 400, path
        assert answer.json()["error"]["code"] == "invalid_token" and "Location" not in answer
    assert events(delivery_id) == events(other_id) == []
    assert status(delivery_id) == status(other_id) == "sent"


# --- counting -----------------------------------------------------------------------------------

def test_opens_and_clicks_are_counted_once_per_delivery_and_every_request_is_answered(api, ana, ctl, client):
    delivery_id, mail = send_email(api, ctl)
    click, pixel = links(mail["html"])
    for _ in range(2):
        assert human(client, pixel).content == PIXEL
    assert events(delivery_id) == ["opened"] and status(delivery_id) == "opened"
    for _ in range(3):
        assert human(client, click)["Location"] == TARGET
    assert events(delivery_id) == ["clicked", "opened"] and status(delivery_id) == "clicked"
    assert human(client, pixel).status_code == 200
    assert status(delivery_id) == "clicked"  # a later open does not move it back
    assert DeliveryEvent.objects.get(delivery_id=delivery_id, kind="clicked").data == {"url": TARGET}


def test_a_click_before_any_open_records_the_open_too_and_ends_clicked(api, ana, ctl, client):
    delivery_id, mail = send_email(api, ctl)
    click, pixel = links(mail["html"])
    assert human(client, click).status_code == 302
    assert events(delivery_id) == ["clicked", "opened"] and status(delivery_id) == "clicked"
    assert DeliveryEvent.objects.get(delivery_id=delivery_id, kind="opened").data == {"via": "click"}
    assert human(client, pixel).status_code == 200
    assert events(delivery_id) == ["clicked", "opened"] and status(delivery_id) == "clicked"


def test_scanner_prefetches_are_answered_but_not_counted(api, ana, ctl, client):
    delivery_id, mail = send_email(api, ctl)
    click, pixel = links(mail["html"])
    # HEAD: a link checker's probe.
    assert client.head(click, HTTP_USER_AGENT=BROWSER)["Location"] == TARGET
    assert client.head(pixel, HTTP_USER_AGENT=BROWSER).status_code == 200
    # Right after the send: a security gateway, an HTTP library, no User-Agent at all.
    for agent in ("Barracuda Sentinel (EE)", "python-requests/2.32.3", "Mozilla/5.0 (compatible; bingbot/2.0)", ""):
        assert client.get(click, HTTP_USER_AGENT=agent)["Location"] == TARGET
        assert client.get(pixel, HTTP_USER_AGENT=agent).content == PIXEL
    assert events(delivery_id) == [] and status(delivery_id) == "sent"
    # A person's browser counts.
    assert human(client, click).status_code == 302
    assert events(delivery_id) == ["clicked", "opened"]


def test_outside_the_scanner_window_any_user_agent_counts(api, ana, ctl, client, settings):
    delivery_id, _ = send_email(api, ctl)
    an_hour_ago = time.time() - 3600
    assert settings.NOTIFY_TRACKING_SCANNER_WINDOW < 3600
    url = tracking.click_url(delivery_id, TARGET, sent_at=an_hour_ago)
    assert client.get(urllib.parse.urlsplit(url).path, HTTP_USER_AGENT="python-requests/2.32.3").status_code == 302
    assert events(delivery_id) == ["clicked", "opened"]


# --- switching it off ---------------------------------------------------------------------------

@pytest.mark.parametrize("opens, clicks", [(False, True), (True, False), (False, False)])
def test_the_apps_switches_decide_the_pixel_and_the_redirects(api, ana, ctl, app_key, opens, clicks):
    App.objects.filter(id=app_key[0].id).update(track_opens=opens, track_clicks=clicks)
    _, mail = send_email(api, ctl)
    html = mail["html"]
    assert bool(PIXEL_SRC.search(html)) is opens
    assert bool(CLICK.search(html)) is clicks
    assert (f'<a href="{TARGET.replace("&", "&amp;")}">your order</a>' in html) is not clicks


def test_a_category_with_tracking_off_gets_neither_whatever_the_app_says(api, ana, ctl):
    r = api.put("/api/v1/categories/security", {"required": True, "tracking": False}, format="json")
    assert r.status_code == 201 and r.json()["tracking"] is False
    _, mail = send_email(api, ctl, category="security")
    assert "/t/" not in mail["html"]
    assert mail["html"].strip() == HTML  # required: no preference footer either; nothing else changed
    assert api.get("/api/v1/categories/security").json()["tracking"] is False
    r = api.put("/api/v1/categories/security", {"tracking": True}, format="json")
    assert r.status_code == 200 and r.json()["tracking"] is True
    _, mail = send_email(api, ctl, category="security")
    assert links(mail["html"])


# --- push opens ---------------------------------------------------------------------------------

def send_push(api, ctl, user: str = "ana") -> tuple[str, dict]:
    """Register a browser subscription for ``user``, send one Web Push; returns the delivery id
    and the payload the service worker decrypts."""
    r = api.post(f"/api/v1/recipients/{user}/devices", {"platform": "web", "subscription": ctl.create_subscription()},
                 format="json")
    assert r.status_code in (200, 201), r.content
    r = api.post("/api/v1/notifications", {"recipient": user, "channels": ["webpush"],
                                           "content": {"push": {"title": "Shipped", "body": "On its way"}}},
                 format="json")
    assert r.status_code == 202, r.content
    delivery_id = r.json()["deliveries"][0]["id"]
    assert send.send(delivery_id) == "sent"
    (record,) = ctl.records("webpush", delivery_id=delivery_id, accepted=True)
    return delivery_id, json.loads(record["extra"]["plaintext"])


def test_a_web_push_carries_a_signed_open_url_its_service_worker_posts_without_a_key(api, ana, ctl, client):
    delivery_id, payload = send_push(api, ctl)
    assert payload["notify_delivery_id"] == delivery_id
    path = urllib.parse.urlsplit(payload["open_url"]).path
    assert client.get(path).status_code == 405  # a prefetch cannot report an open
    first = client.post(path, HTTP_ORIGIN="https://app.example.com")
    assert first.status_code == 200 and first.json() == {"recorded": True}
    assert first["Access-Control-Allow-Origin"] == "*"
    assert client.post(path).json() == {"recorded": False}
    assert events(delivery_id) == ["opened"] and status(delivery_id) == "opened"


def test_an_app_reports_a_push_open_with_its_key_once_and_never_for_another_apps_delivery(api, ana, ctl):
    delivery_id, _ = send_push(api, ctl)
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Api-Key {demo.create_app('tracking-other')[1]}")
    refused = other.post(f"/api/v1/deliveries/{delivery_id}/opened")
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
    assert events(delivery_id) == []
    assert APIClient().post(f"/api/v1/deliveries/{delivery_id}/opened").status_code == 401

    first = api.post(f"/api/v1/deliveries/{delivery_id}/opened")
    assert first.status_code == 200
    assert first.json() == {"delivery_id": delivery_id, "event": "opened", "recorded": True, "status": "opened"}
    again = api.post(f"/api/v1/deliveries/{delivery_id}/opened")
    assert again.status_code == 200 and again.json()["recorded"] is False
    assert events(delivery_id) == ["opened"]
    assert api.post("/api/v1/deliveries/00000000-0000-0000-0000-000000000000/opened").status_code == 404


def test_a_delivery_that_was_never_sent_cannot_be_opened(api, ana):
    api.put("/api/v1/recipients/ana/preferences", {"preferences": [{"channel": "email", "enabled": False}]},
            format="json")
    r = api.post("/api/v1/notifications", {"recipient": "ana", "channels": ["email"],
                                           "content": {"email": {"subject": "s", "text": "t"}}}, format="json")
    (delivery,) = r.json()["deliveries"]
    assert delivery["status"] == "suppressed"
    refused = api.post(f"/api/v1/deliveries/{delivery['id']}/opened")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "not_sent"
    assert events(delivery["id"]) == []


def test_the_open_endpoint_is_described_in_the_openapi_schema_with_examples(api):
    schema = api.get("/api/v1/schema", {"format": "json"}).json()
    operation = schema["paths"]["/api/v1/deliveries/{delivery_id}/opened"]["post"]
    ok = operation["responses"]["200"]["content"]["application/json"]
    assert set(ok["examples"]) == {"FirstReport", "RepeatedReport"}
    assert ok["examples"]["RepeatedReport"]["value"]["recorded"] is False
    assert {"401", "404", "409"} <= set(operation["responses"])


# --- unsubscribes -------------------------------------------------------------------------------

def test_a_one_click_unsubscribe_is_recorded_as_an_event_of_its_delivery(api, ana, ctl, client, settings):
    settings.NOTIFY_PUBLIC_URL = "https://notify.example.com"  # RFC 8058 needs https
    delivery_id, mail = send_email(api, ctl, category="marketing")
    unsubscribe = mail["email_headers"]["List-Unsubscribe"].strip("<>")
    path = urllib.parse.urlsplit(unsubscribe).path
    for _ in range(2):
        answer = client.post(path, {"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 200
    assert events(delivery_id) == ["unsubscribed"]
    assert status(delivery_id) == "sent"  # an unsubscribe moves no status
    pref = Preference.objects.get(recipient__external_id="ana")
    assert (pref.channel, pref.category, pref.enabled, pref.source) == ("email", "marketing", False, "unsubscribe")
