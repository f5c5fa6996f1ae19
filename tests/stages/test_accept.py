"""Accept (notify.accept): what the API's side decides before anything is written, asking the
channels' adapters for every channel rule."""

from __future__ import annotations

import secrets

import pytest

from devtools import demo
from notify.models import Delivery
from tests.helpers import browser_subscription, db_counts

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def person(api):
    def make(user: str, devices=("ios", "android", "web"), phone="+821012345678", email="ji@example.com"):
        r = api.put(f"/api/v1/recipients/{user}", {"email": email, "phone": phone}, format="json")
        assert r.status_code == 201, r.content
        for platform in devices:
            device = ({"platform": "web", "subscription": browser_subscription()} if platform == "web" else
                      {"platform": platform, "token": secrets.token_hex(32) if platform == "ios" else demo.fcm_token()})
            assert api.post(f"/api/v1/recipients/{user}/devices", device, format="json").status_code == 201
        return user
    return make


def send(api, body):
    return api.post("/api/v1/notifications", body, format="json")


def test_content_is_checked_only_for_the_channels_the_send_uses(api, person):
    user = person("only-mail")
    too_long_push = {"title": "t", "body": "가" * 2000}  # 6000 UTF-8 bytes: every push provider refuses it
    r = send(api, {"recipient": user, "channels": ["email"],
                   "content": {"push": too_long_push, "email": {"subject": "s", "text": "t"}}})
    assert r.status_code == 202, r.content
    r = send(api, {"recipient": user, "channels": ["email", "apns"],
                   "content": {"push": too_long_push, "email": {"subject": "s", "text": "t"}}})
    assert r.status_code == 422 and r.json()["error"]["code"] == "payload_too_large"
    assert "content.push" in r.json()["error"]["fields"]


def test_a_rule_of_one_provider_refuses_only_sends_that_reach_it(api, person):
    """FCM reserves the data key "from"; APNs does not (its payload root reserves "aps")."""
    ios_only = person("ios-only", devices=("ios",), phone="", email="")
    both = person("both", devices=("ios", "android"), phone="", email="")
    body = {"content": {"push": {"title": "hi", "data": {"from": "me"}}}}
    assert send(api, {"recipient": ios_only, **body}).status_code == 202
    r = send(api, {"recipient": both, **body})
    assert r.status_code == 422 and r.json()["error"]["code"] == "reserved_data_key", r.content
    r = send(api, {"recipient": ios_only, "content": {"push": {"title": "hi", "data": {"aps": "x"}}}})
    assert r.status_code == 422 and r.json()["error"]["code"] == "reserved_data_key", r.content


@pytest.mark.parametrize("subject", ["Hi\r\nBcc: someone@example.com", "Hi\u2028there", "Hi\x00",
                                     "ok\x0bBcc: evil@example.com", "ok\x1cx", "ok\x0cx", "ok\x85x"])
def test_an_email_subject_that_breaks_a_header_line_is_422_and_writes_nothing(api, person, outbox_listener, subject):
    user = person("mail", devices=())
    before = db_counts()
    r = send(api, {"recipient": user, "channels": ["email"], "content": {"email": {"subject": subject, "text": "t"}}})
    assert r.status_code in (400, 422), r.content
    assert r.json()["error"]["code"] in ("invalid_header", "invalid_request")
    assert db_counts() == before and outbox_listener.received() == []


@pytest.mark.parametrize("body, encoding, segments", [
    ("a" * 160, "GSM-7", 1), ("a" * 161, "GSM-7", 2),
    ("€" * 80, "GSM-7", 1), ("€" * 81, "GSM-7", 2),  # € is an escape pair: 2 septets
    ("가" * 70, "UCS-2", 1), ("가" * 71, "UCS-2", 2),
    ("😀" * 35, "UCS-2", 1), ("😀" * 36, "UCS-2", 2)])  # 😀 is a surrogate pair: 2 units
def test_the_send_answer_reports_sms_encoding_and_segments(api, person, body, encoding, segments):
    user = person("texter", devices=(), email="")
    r = send(api, {"recipient": user, "content": {"sms": {"body": body}}})
    assert r.status_code == 202, r.content
    (delivery,) = r.json()["deliveries"]
    assert delivery["content_info"] == {"encoding": encoding, "segments": segments}


def test_a_channel_whose_every_provider_is_tripped_is_parked_and_a_secondary_keeps_it_queued(
        api, person, tripped, settings):
    user = person("parked", devices=(), phone="")
    tripped("ses")
    r = send(api, {"recipient": user, "content": {"email": {"subject": "s", "text": "t"}}})
    (delivery,) = r.json()["deliveries"]
    assert (delivery["status"], delivery["reason"]) == ("retrying", "circuit_open")
    assert Delivery.objects.get(id=delivery["id"]).log.get().to_status == "retrying"

    settings.NOTIFY_CHANNEL_PROVIDERS = {**settings.NOTIFY_CHANNEL_PROVIDERS, "email": ("ses", "smtp")}
    r = send(api, {"recipient": user, "content": {"email": {"subject": "s", "text": "t"}}})
    assert r.json()["deliveries"][0]["status"] == "queued"


def test_device_platforms_and_their_validation_come_from_the_adapters(api, person):
    user = person("devices", devices=())
    r = api.post(f"/api/v1/recipients/{user}/devices", {"platform": "blackberry", "token": "x"}, format="json")
    assert r.status_code == 400 and "platform" in r.json()["error"]["fields"]
    r = api.post(f"/api/v1/recipients/{user}/devices", {"platform": "ios", "token": "z" * 64}, format="json")
    assert r.status_code == 400 and "64 hexadecimal" in str(r.json()["error"]["fields"]["token"])
    r = api.post(f"/api/v1/recipients/{user}/devices", {"platform": "web"}, format="json")
    assert r.status_code == 400 and "subscription" in r.json()["error"]["fields"]


def test_push_preference_names_every_push_channel(api, person):
    user = person("prefs")
    r = api.put(f"/api/v1/recipients/{user}/preferences",
                {"preferences": [{"channel": "push", "enabled": False}]}, format="json")
    assert r.status_code == 200, r.content
    assert sorted(p["channel"] for p in r.json()["preferences"]) == ["apns", "fcm", "webpush"]
    r = send(api, {"recipient": user, "template": "order-shipped", "data": {"name": "a", "order": "1"}})
    statuses = {d["channel"]: (d["status"], d["reason"]) for d in r.json()["deliveries"]}
    assert statuses["apns"] == statuses["fcm"] == statuses["webpush"] == ("suppressed", "opted_out")
    assert statuses["sms"][0] == statuses["email"][0] == "queued"
