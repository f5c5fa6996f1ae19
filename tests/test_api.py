"""The REST API in-process (Django test client) against the real PostgreSQL, Redis and RabbitMQ:
acceptance, suppression, and every bad input answered 4xx with nothing written or queued.

The API publishes nothing itself: an accepted send commits its queued deliveries to the outbox
(``published_at`` NULL) and wakes the relay with ``NOTIFY notify_outbox``; these tests run no
relay, so they call ``notify.outbox.relay_once()`` where the relay process would."""

from __future__ import annotations

import json
import secrets

import pytest

from devtools import demo
from notify.models import Delivery, Notification, Preference, Recipient
from notify.outbox import relay_once

from tests.helpers import browser_subscription, db_counts, queue_depths, queued_tasks

pytestmark = pytest.mark.django_db(transaction=True)

USER = "user-42"


@pytest.fixture
def recipient(api):
    r = api.put(f"/api/v1/recipients/{USER}", {"name": "Ana Müller", "locale": "de-DE", "timezone": "Europe/Berlin",
                                               "email": "ana@example.com", "phone": "+4915123456789"}, format="json")
    assert r.status_code == 201, r.content
    for device in ({"platform": "ios", "token": secrets.token_hex(32)},
                   {"platform": "android", "token": demo.fcm_token()},
                   {"platform": "web", "subscription": browser_subscription()}):
        r = api.post(f"/api/v1/recipients/{USER}/devices", device, format="json")
        assert r.status_code == 201, r.content
    return USER


def _send(api, body, **headers):
    return api.post("/api/v1/notifications", body, format="json", **headers)


def test_send_puts_one_delivery_per_channel_in_the_outbox_and_the_relay_publishes_them(api, recipient, empty_queues,
                                                                                      outbox_listener):
    r = _send(api, {"recipient": recipient, "template": "order-shipped", "data": {"name": "Ana", "order": "7"}})
    assert r.status_code == 202, r.content
    body = r.json()
    assert sorted(d["channel"] for d in body["deliveries"]) == ["apns", "email", "fcm", "sms", "webpush"]
    assert all(d["status"] == "queued" for d in body["deliveries"])
    # The API itself publishes nothing: the deliveries wait in the outbox and the relay is woken.
    assert queue_depths() == {c: 0 for c in queue_depths()}
    rows = Delivery.objects.filter(notification_id=body["id"])
    assert sorted(rows.filter(status="queued", published_at__isnull=True).values_list("channel", flat=True)) == [
        "apns", "email", "fcm", "sms", "webpush"]
    assert outbox_listener.received() == [""]

    assert relay_once() == 5
    ids = {d["channel"]: d["id"] for d in body["deliveries"]}
    for channel, delivery_id in ids.items():
        assert queued_tasks(channel) == [{"task": f"notify.deliver.{channel}", "args": [[delivery_id]],
                                          "argsrepr": "[1 deliveries]"}]
    assert rows.filter(published_at__isnull=False).count() == 5
    # Published rows have left the outbox: a second round finds nothing.
    assert relay_once() == 0
    assert queue_depths() == {c: 1 for c in ids}
    rendered = Notification.objects.get(id=body["id"]).content
    assert rendered["push"]["title"].startswith("Ana님") and rendered["sms"]["body"].endswith("📦")
    assert rendered["push"]["data"] == {"order": "7"}


def test_opt_out_suppresses_that_channel_and_queues_nothing_for_it(api, recipient):
    r = api.put(f"/api/v1/recipients/{recipient}/preferences",
                {"preferences": [{"channel": "sms", "enabled": False}]}, format="json")
    assert r.status_code == 200, r.content
    before = queue_depths()
    r = _send(api, {"recipient": recipient, "template": "order-shipped", "data": {"name": "Ana", "order": "8"}})
    assert r.status_code == 202
    sms = [d for d in r.json()["deliveries"] if d["channel"] == "sms"]
    assert sms == [{"id": sms[0]["id"], "channel": "sms", "to": "+4915123456789", "status": "suppressed",
                    "reason": "opted_out"}]
    assert queue_depths() == before
    # Four queued deliveries; the suppressed one is not in the outbox and is never published.
    assert relay_once() == 4
    after = queue_depths()
    assert after["sms"] == before["sms"] and after["email"] == before["email"] + 1
    assert Delivery.objects.get(id=sms[0]["id"]).published_at is None


def test_a_preference_with_an_unknown_field_is_refused_and_changes_nothing(api, recipient):
    r = api.put(f"/api/v1/recipients/{recipient}/preferences",
                {"preferences": [{"channel": "sms", "enabled": False, "categroy": "promo"}]}, format="json")
    assert r.status_code == 400 and "preferences.0.categroy" in r.json()["error"]["fields"], r.content
    assert not Preference.objects.exists()


def test_opt_out_by_category_only_affects_that_category(api, recipient):
    api.put(f"/api/v1/recipients/{recipient}/preferences",
            {"preferences": [{"channel": "push", "category": "marketing", "enabled": False}]}, format="json")
    content = {"push": {"title": "Sale", "body": "50% off"}}
    r1 = _send(api, {"recipient": recipient, "content": content, "category": "marketing"})
    r2 = _send(api, {"recipient": recipient, "content": content, "category": "orders"})
    assert {d["status"] for d in r1.json()["deliveries"]} == {"suppressed"}
    assert {d["status"] for d in r2.json()["deliveries"]} == {"queued"}


def test_preference_change_takes_effect_on_the_next_send_despite_the_cache(api, recipient):
    content = {"email": {"subject": "Hi", "text": "Hello"}}
    assert _send(api, {"recipient": recipient, "content": content}).json()["deliveries"][0]["status"] == "queued"
    Preference.objects.create(recipient=Recipient.objects.get(external_id=recipient), channel="email", enabled=False,
                              source="admin")
    assert _send(api, {"recipient": recipient, "content": content}).json()["deliveries"][0]["reason"] == "opted_out"


def test_explicit_channel_without_address_is_suppressed_with_reason(api):
    api.put("/api/v1/recipients/no-phone", {"email": "x@example.com"}, format="json")
    r = _send(api, {"recipient": "no-phone", "content": {"sms": {"body": "hi"}, "email": {"subject": "s", "text": "t"}},
                    "channels": ["sms", "email"]})
    assert r.status_code == 202
    assert [(d["channel"], d["status"], d["reason"]) for d in r.json()["deliveries"]] == [
        ("sms", "suppressed", "no_address"), ("email", "queued", None)]


def test_push_data_values_reach_fcm_as_strings_by_the_documented_rule(api, recipient):
    """The notification keeps the data as given (APNs and Web Push carry JSON values); FCM, whose
    data map takes strings only, gets each other value as its compact JSON text."""
    from channels.fcm import FCMChannel

    given = {"count": 3, "ok": True, "nested": {"a": [1, 2]}, "s": "x", "none": None}
    r = _send(api, {"recipient": recipient, "channels": ["fcm"], "content": {"push": {"title": "t", "data": given}}})
    assert r.status_code == 202, r.content
    content = Notification.objects.get(id=r.json()["id"]).content["push"]
    assert content["data"] == given
    body = json.loads(FCMChannel.build_payload(FCMChannel.__new__(FCMChannel), _message(r, content)))
    data = body["message"]["data"]
    assert {k: v for k, v in data.items() if k != "notify_delivery_id"} == {
        "count": "3", "ok": "true", "nested": '{"a":[1,2]}', "s": "x", "none": "null"}


def _message(response, content):
    from channels.base import Message

    delivery = response.json()["deliveries"][0]
    return Message(delivery["id"], delivery["to"], content)


def test_rate_limits_are_not_counted_when_a_send_is_accepted(api, recipient, settings):
    """Counted at the moment of sending (tests/test_rate_limits.py), so accepting uses up nothing."""
    settings.NOTIFY_RATE_LIMIT = "2/minute"
    statuses = [_send(api, {"recipient": recipient, "content": {"sms": {"body": "x"}}}).json()["deliveries"][0]
                for _ in range(3)]
    assert [d["status"] for d in statuses] == ["queued", "queued", "queued"]


def test_read_notification_with_deliveries(api, recipient):
    sent = _send(api, {"recipient": recipient, "content": {"email": {"subject": "s", "text": "t"}}}).json()
    r = api.get(f"/api/v1/notifications/{sent['id']}")
    assert r.status_code == 200
    assert r.json()["deliveries"][0]["id"] == sent["deliveries"][0]["id"]
    assert r.json()["recipient"] == recipient


def test_device_removal_and_recipient_read(api, recipient):
    devices = api.get(f"/api/v1/recipients/{recipient}/devices").json()
    assert len(devices) == 3
    assert api.delete(f"/api/v1/recipients/{recipient}/devices/{devices[0]['id']}").status_code == 204
    assert len(api.get(f"/api/v1/recipients/{recipient}/devices").json()) == 2
    assert api.get(f"/api/v1/recipients/{recipient}").json()["phone"] == "+4915123456789"


# --- bad input: 4xx, machine-readable code, nothing written, nothing queued -------------------

GOOD = {"recipient": USER, "content": {"sms": {"body": "hi"}}}

BAD_SENDS = [
    ("bad json", b'{"recipient": ', 400, "invalid_json"),
    ("unknown recipient", {**GOOD, "recipient": "nobody"}, 404, "recipient_not_found"),
    ("unknown template", {"recipient": USER, "template": "nope"}, 404, "template_not_found"),
    ("wrong type", {**GOOD, "ttl": "soon"}, 400, "invalid_request"),
    ("channels not a list", {**GOOD, "channels": "sms"}, 400, "invalid_request"),
    ("unknown channel", {**GOOD, "channels": ["pager"]}, 400, "invalid_request"),
    ("empty sms", {"recipient": USER, "content": {"sms": {"body": ""}}}, 400, "invalid_request"),
    ("empty push", {"recipient": USER, "content": {"push": {"title": "", "body": ""}}}, 422, "empty_content"),
    ("no content nor template", {"recipient": USER}, 400, "invalid_request"),
    ("both content and template", {**GOOD, "template": "order-shipped"}, 400, "invalid_request"),
    ("unknown field", {**GOOD, "colour": "red"}, 400, "invalid_request"),
    ("push too large", {"recipient": USER, "content": {"push": {"title": "t", "body": "가" * 1400}}}, 422, "payload_too_large"),
    ("reserved data key", {"recipient": USER, "content": {"push": {"title": "t", "data": {"google.x": "1"}}}}, 422, "reserved_data_key"),
    ("channel without content", {**GOOD, "channels": ["email"]}, 422, "no_content_for_channel"),
    ("body too large", {**GOOD, "pad": "x" * 70000}, 413, "body_too_large"),
]


@pytest.mark.parametrize("name,body,status,code", BAD_SENDS, ids=[b[0] for b in BAD_SENDS])
def test_bad_send_is_4xx_and_changes_nothing(api, recipient, outbox_listener, name, body, status, code):
    before_db, before_q = db_counts(), queue_depths()
    if isinstance(body, bytes):
        r = api.generic("POST", "/api/v1/notifications", body, content_type="application/json")
    else:
        r = _send(api, body)
    assert r.status_code == status, r.content
    assert r.json()["error"]["code"] == code
    assert db_counts() == before_db
    assert queue_depths() == before_q
    assert outbox_listener.received() == []
    assert relay_once() == 0


@pytest.mark.parametrize("header,code", [(None, "missing_api_key"), ("Api-Key nope.nope", "invalid_api_key"),
                                         ("Token abc", "invalid_api_key"), ("Bearer abc", "invalid_token")])
def test_missing_or_wrong_api_key_is_401(client, recipient, outbox_listener, header, code):
    before_db, before_q = db_counts(), queue_depths()
    extra = {"HTTP_AUTHORIZATION": header} if header else {}
    r = client.post("/api/v1/notifications", json.dumps(GOOD), content_type="application/json", **extra)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == code
    assert db_counts() == before_db and queue_depths() == before_q
    assert outbox_listener.received() == []


def test_revoked_api_key_is_401(client, app_key, recipient):
    from notify.models import AppAPIKey

    # Revoked with save(), as the admin does: its signal drops the key's cache entry (the
    # recipient fixture's calls cached it), so the very next request sees the revocation. A
    # QuerySet.update() bypasses that signal and applies only after notify.cache.API_KEY_TTL.
    for api_key in AppAPIKey.objects.filter(app=app_key[0]):
        api_key.revoked = True
        api_key.save()
    r = client.post("/api/v1/notifications", json.dumps(GOOD), content_type="application/json",
                    HTTP_AUTHORIZATION=f"Api-Key {app_key[1]}")
    assert r.status_code == 401


def test_api_key_of_the_wrong_shape_is_refused_before_any_look_up(client, recipient):
    """Made-up keys must not fill Redis with cache entries (nor reach PostgreSQL)."""
    from django.core.cache import cache

    from notify.cache import api_key_key

    r = client.post("/api/v1/notifications", json.dumps(GOOD), content_type="application/json",
                    HTTP_AUTHORIZATION="Api-Key zzzzzzzz.too-short")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert cache.get(api_key_key("zzzzzzzz")) is None
    # A well-formed unknown key is looked up once, and the miss is cached.
    r = client.post("/api/v1/notifications", json.dumps(GOOD), content_type="application/json",
                    HTTP_AUTHORIZATION="Api-Key yyyyyyyy." + "y" * 32)
    assert r.status_code == 401
    assert cache.get(api_key_key("yyyyyyyy")) == {}


BAD_RECIPIENTS = [
    ({"phone": "010-1234-5678"}, "phone"),
    ({"phone": "+82101234"}, "phone"),
    ({"email": "not-an-email"}, "email"),
    ({"email": "a@b@example.com"}, "email"),
    ({"timezone": "Mars/Olympus"}, "timezone"),
    ({"name": 12, "locale": ["x"]}, "locale"),
]


@pytest.mark.parametrize("body,field", BAD_RECIPIENTS)
def test_bad_recipient_is_400_with_field_error(api, body, field):
    before = db_counts()
    r = api.put("/api/v1/recipients/bad-1", body, format="json")
    assert r.status_code == 400, r.content
    assert field in r.json()["error"]["fields"]
    assert db_counts() == before


def test_internationalised_email_and_phones_of_several_countries_are_accepted(api):
    cases = [("jiwoo@예시.한국", "+821012345678", "jiwoo@xn--vv4b11d.xn--3e0b707e"),
             ("jose@exämple.es", "+34612345678", "jose@xn--exmple-cua.es"),
             ("user@example.jp", "+819012345678", "user@example.jp"),
             ("a.b@example.co.uk", "+447911123456", "a.b@example.co.uk")]
    for i, (email, phone, stored) in enumerate(cases):
        r = api.put(f"/api/v1/recipients/intl-{i}", {"email": email, "phone": phone}, format="json")
        assert r.status_code == 201, r.content
        assert (r.json()["phone"], r.json()["email"]) == (phone, stored)


def test_non_ascii_local_part_is_refused_because_ses_cannot_send_it(api):
    r = api.put("/api/v1/recipients/smtputf8", {"email": "지우@example.com"}, format="json")
    assert r.status_code == 400 and "email" in r.json()["error"]["fields"]


BAD_DEVICES = [
    ({"platform": "ios", "token": "abc123"}, "token"),
    ({"platform": "ios", "token": "z" * 64}, "token"),
    ({"platform": "android", "token": "short"}, "token"),
    ({"platform": "web", "subscription": {"endpoint": "http://insecure.example/x", "keys": {"p256dh": "a", "auth": "b"}}}, "subscription"),
    ({"platform": "web", "subscription": {"endpoint": "https://push.example/x", "keys": {"p256dh": "AAAA", "auth": "AAAA"}}}, "subscription"),
    ({"platform": "watch", "token": "x"}, "platform"),
]


@pytest.mark.parametrize("body,field", BAD_DEVICES)
def test_bad_device_is_400_with_field_error(api, recipient, body, field):
    before = db_counts()
    r = api.post(f"/api/v1/recipients/{recipient}/devices", body, format="json")
    assert r.status_code == 400, r.content
    # A subscription's problems are named by part (subscription.keys.p256dh).
    assert any(key == field or key.startswith(f"{field}.") for key in r.json()["error"]["fields"]), r.json()
    assert db_counts() == before


def test_devices_of_another_app_are_invisible(api, recipient, db):
    _, other_key = demo.create_app("other")
    from rest_framework.test import APIClient

    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Api-Key {other_key}")
    assert other.get(f"/api/v1/recipients/{recipient}/devices").status_code == 404
    r = other.post("/api/v1/notifications", GOOD, format="json")
    assert r.status_code == 404 and r.json()["error"]["code"] == "recipient_not_found"


def test_openapi_schema_describes_every_endpoint(client, db):
    import yaml

    r = client.get("/api/v1/schema")
    assert r.status_code == 200
    schema = yaml.safe_load(r.content)
    assert {"/api/v1/notifications", "/api/v1/notifications/{notification_id}", "/api/v1/recipients/{external_id}",
            "/api/v1/recipients/{external_id}/devices", "/api/v1/recipients/{external_id}/preferences",
            "/api/v1/templates", "/api/v1/templates/{name}", "/api/v1/templates/{name}/versions",
            "/api/v1/templates/{name}/versions/{number}", "/api/v1/templates/{name}/versions/{number}/publish",
            "/api/v1/templates/{name}/preview"} <= set(schema["paths"])
    assert "ApiKeyAuth" in schema["components"]["securitySchemes"]
    send = schema["paths"]["/api/v1/notifications"]["post"]
    assert "202" in send["responses"] and "requestBody" in send
    templates = {path: ops for path, ops in schema["paths"].items() if path.startswith("/api/v1/templates")}
    for path, ops in templates.items():
        for method, op in ops.items():
            # Every templates call documents its errors (with the error body) besides its success.
            errors = [code for code in op["responses"] if code.startswith("4")]
            assert errors, (method, path)
            for code in errors:
                assert op["responses"][code]["content"]["application/json"]["schema"]["$ref"].endswith("/ApiError")
    assert "requestBody" in templates["/api/v1/templates"]["post"]
    assert "201" in templates["/api/v1/templates"]["post"]["responses"]


def test_unknown_nested_field_is_rejected(api, recipient, outbox_listener):
    before_db, before_q = db_counts(), queue_depths()
    r = _send(api, {"recipient": recipient, "content": {"sms": {"body": "hi", "bodyy": "typo"}}})
    assert r.status_code == 400 and "content.sms.bodyy" in r.json()["error"]["fields"]
    assert db_counts() == before_db and queue_depths() == before_q
    assert outbox_listener.received() == []


def test_batch_accepts_all_items_in_one_call(api, recipient, empty_queues, outbox_listener):
    items = [{"recipient": recipient, "content": {"sms": {"body": f"#{i}"}}, "event_id": f"b-{i}"} for i in range(3)]
    r = api.post("/api/v1/notifications/batch", {"notifications": items}, format="json")
    assert r.status_code == 202, r.content
    bodies = r.json()["notifications"]
    assert [b["event_id"] for b in bodies] == ["b-0", "b-1", "b-2"]
    ids = sorted(b["deliveries"][0]["id"] for b in bodies)
    assert queue_depths()["sms"] == 0
    assert sorted(str(i) for i in Delivery.objects.filter(status="queued", published_at__isnull=True)
                  .values_list("id", flat=True)) == ids
    # One transaction, one wake-up for the whole batch.
    assert outbox_listener.received() == [""]
    # The relay carries the three SMS of the batch in one task.
    assert relay_once() == 3
    [task] = queued_tasks("sms")
    assert task["task"] == "notify.deliver.sms" and sorted(task["args"][0]) == ids
    assert Delivery.objects.filter(published_at__isnull=False).count() == 3

    again = api.post("/api/v1/notifications/batch", {"notifications": items}, format="json")
    assert again.json()["notifications"] == bodies
    assert Notification.objects.filter(idempotency_key__startswith="b-").count() == 3
    # A replay writes nothing, so it neither wakes the relay nor gives it anything to publish.
    assert outbox_listener.received() == []
    assert relay_once() == 0
    assert queue_depths()["sms"] == 1


@pytest.mark.parametrize("bad_item,code", [
    ({"recipient": "nobody", "content": {"sms": {"body": "x"}}}, "recipient_not_found"),
    ({"recipient": USER, "content": {"sms": {"body": "x"}}, "event_id": "dup"}, "duplicate_idempotency_key"),
])
def test_batch_with_one_bad_item_writes_and_queues_nothing(api, recipient, outbox_listener, bad_item, code):
    before_db, before_q = db_counts(), queue_depths()
    items = [{"recipient": recipient, "content": {"sms": {"body": "ok"}}, "event_id": "dup"}, bad_item]
    r = api.post("/api/v1/notifications/batch", {"notifications": items}, format="json")
    assert r.status_code == 400, r.content
    assert r.json()["error"]["code"] == "batch_rejected"
    assert r.json()["error"]["items"]["1"]["code"] == code
    assert db_counts() == before_db and queue_depths() == before_q
    # All or none: the valid first item did not reach the outbox nor wake the relay either.
    assert outbox_listener.received() == []
    assert relay_once() == 0


def test_batch_with_invalid_fields_is_400_with_item_paths(api, recipient):
    r = api.post("/api/v1/notifications/batch", {"notifications": [{"recipient": recipient, "ttl": "x",
                                                                     "content": {"sms": {"body": "x"}}}]}, format="json")
    assert r.status_code == 400 and "notifications.0.ttl" in r.json()["error"]["fields"]


def test_device_moved_to_another_recipient_leaves_the_previous_owners_sends(api, recipient):
    token = secrets.token_hex(32)
    api.put("/api/v1/recipients/owner-a", {"name": "A"}, format="json")
    api.put("/api/v1/recipients/owner-b", {"name": "B"}, format="json")
    assert api.post("/api/v1/recipients/owner-a/devices", {"platform": "ios", "token": token}, format="json").status_code == 201
    first = _send(api, {"recipient": "owner-a", "content": PUSH_ONLY}).json()
    assert [d["to"] for d in first["deliveries"]] == [token]  # owner-a's profile is now cached
    assert api.post("/api/v1/recipients/owner-b/devices", {"platform": "ios", "token": token}, format="json").status_code == 200
    r = _send(api, {"recipient": "owner-a", "content": PUSH_ONLY})
    assert r.status_code == 422 and r.json()["error"]["code"] == "no_channel"
    assert [d["to"] for d in _send(api, {"recipient": "owner-b", "content": PUSH_ONLY}).json()["deliveries"]] == [token]


PUSH_ONLY = {"push": {"title": "for your eyes only"}}


@pytest.mark.parametrize("endpoint", ["https://127.0.0.1:1/push/abc", "https://169.254.169.254/latest/meta-data",
                                      "https://10.0.0.8/wp/1", "https://[::1]/wp/1", "https://localhost/wp/1",
                                      # IPv4 as inet_aton (and so the resolver) still reads it
                                      "https://127.1:7777/x", "https://2130706433:7777/x",
                                      "https://0x7f.0.0.1:7777/x", "https://0:7777/x", "https://10.1/x"])
def test_web_push_endpoint_on_an_internal_address_is_refused(api, recipient, endpoint):
    before = db_counts()
    r = api.post(f"/api/v1/recipients/{recipient}/devices",
                 {"platform": "web", "subscription": browser_subscription(endpoint)}, format="json")
    assert r.status_code == 400, r.content
    assert db_counts() == before


def test_web_push_endpoint_on_an_allowed_private_push_service_is_accepted(api, recipient, settings):
    # NOTIFY_WEBPUSH_PRIVATE_ENDPOINTS=10.0.0.8:8443, as the settings read it.
    settings.NOTIFY_PROVIDER_ENV = {**settings.NOTIFY_PROVIDER_ENV,
                                    "webpush": {**settings.NOTIFY_PROVIDER_ENV["webpush"],
                                                "private_endpoints": "10.0.0.8:8443"}}
    r = api.post(f"/api/v1/recipients/{recipient}/devices",
                 {"platform": "web", "subscription": browser_subscription("https://10.0.0.8:8443/wp/1")}, format="json")
    assert r.status_code == 201, r.content


@pytest.mark.parametrize("phone,reason", [
    ("010-1234-5678", "not_e164"),
    ("+0821012345678", "not_e164"),
    ("+999123456", "invalid_country_code"),
    ("+1200555012", "too_short"),
    ("+1201555012345", "too_long"),
    ("+82101234", "not_valid_for_region"),
])
def test_a_refused_phone_number_says_why(api, phone, reason):
    r = api.put("/api/v1/recipients/phone-why", {"phone": phone}, format="json")
    assert r.status_code == 400, r.content
    error = r.json()["error"]
    assert error["reasons"]["phone"] == [reason]
    assert error["fields"]["phone"][0]


def test_a_recipient_update_with_bad_fields_is_refused_whole_naming_each(api):
    api.put("/api/v1/recipients/whole", {"email": "old@example.com", "phone": "+4915123456789"}, format="json")
    r = api.put("/api/v1/recipients/whole", {"email": "new@example.com", "name": "New", "phone": "+82101234",
                                              "timezone": "Mars/Olympus"}, format="json")
    assert r.status_code == 400
    assert set(r.json()["error"]["fields"]) == {"phone", "timezone"}
    assert r.json()["error"]["reasons"]["phone"] == ["not_valid_for_region"]
    stored = api.get("/api/v1/recipients/whole").json()
    assert (stored["email"], stored["name"], stored["phone"]) == ("old@example.com", "", "+4915123456789")
