"""Inputs found by a user trial that made the API answer 500: each must be a 4xx JSON error with
nothing written or queued (or, for the recipient race, a clean 200/201)."""

from __future__ import annotations

import json
import secrets
import threading

import pytest
from django.db import connection
from django.test import Client

from devtools import demo
from notify.models import Device, Notification, Recipient

from tests.helpers import browser_subscription, db_counts, queue_depths

pytestmark = pytest.mark.django_db(transaction=True)

USER = "user-hardening"


@pytest.fixture
def recipient(api):
    r = api.put(f"/api/v1/recipients/{USER}", {"email": "ana@example.com", "phone": "+4915123456789"}, format="json")
    assert r.status_code == 201, r.content
    for device in ({"platform": "android", "token": demo.fcm_token()},
                   {"platform": "web", "subscription": browser_subscription()}):
        r = api.post(f"/api/v1/recipients/{USER}/devices", device, format="json")
        assert r.status_code == 201, r.content
    return USER


def _raw(api, method, path, body, **extra):
    """Send ``body`` as JSON text with ASCII escapes, so lone surrogates (which the DRF test
    renderer cannot encode) travel exactly as a client would write them: ``"\\ud800"``."""
    text = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return api.generic(method, path, text, content_type="application/json", **extra)


def _assert_refused(response, status, code, before_db, before_q):
    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code, response.json()
    assert db_counts() == before_db
    assert queue_depths() == before_q
    return response.json()["error"]


# --- 1. NUL and lone surrogates inside free-form JSON ---------------------------------------

TEMPLATE = {"recipient": USER, "template": "order-shipped"}
PUSH = {"recipient": USER, "channels": ["fcm"]}

UNSTORABLE_SENDS = [
    ("nul in data value", {**TEMPLATE, "data": {"name": "A\u0000na", "order": "7"}}, "data.name"),
    ("surrogate in data value", {**TEMPLATE, "data": {"name": "\ud800", "order": "7"}}, "data.name"),
    ("nul in data key", {**TEMPLATE, "data": {"name": "Ana", "order": "7", "k\u0000": "v"}}, "data.k\\u0000"),
    ("surrogate deep in data list", {**TEMPLATE, "data": {"name": "Ana", "order": "7", "a": {"b": ["x", "\udfff"]}}},
     "data.a.b.1"),
    ("nul in push data value", {**PUSH, "content": {"push": {"title": "t", "data": {"x": "\u0000"}}}},
     "content.push.data.x"),
    ("surrogate in push data key", {**PUSH, "content": {"push": {"title": "t", "data": {"\ud800": 1}}}},
     "content.push.data.\\ud800"),
    ("nul nested in push data", {**PUSH, "content": {"push": {"title": "t", "data": {"o": {"p": "a\u0000"}}}}},
     "content.push.data.o.p"),
]


@pytest.mark.parametrize("name,body,field", UNSTORABLE_SENDS, ids=[s[0] for s in UNSTORABLE_SENDS])
def test_unstorable_characters_in_free_form_json_are_400_with_path(api, recipient, name, body, field):
    before_db, before_q = db_counts(), queue_depths()
    error = _assert_refused(_raw(api, "POST", "/api/v1/notifications", body), 400, "invalid_request",
                            before_db, before_q)
    assert field in error["fields"], error


def test_unstorable_characters_in_a_batch_item_are_400_with_item_path(api, recipient):
    before_db, before_q = db_counts(), queue_depths()
    items = [{**TEMPLATE, "data": {"name": "Ana", "order": "1"}, "event_id": "h-0"},
             {**TEMPLATE, "data": {"name": "Ana", "order": "\u0000"}, "event_id": "h-1"},
             {**PUSH, "content": {"push": {"title": "t", "data": {"k": ["\ud800"]}}}, "event_id": "h-2"}]
    error = _assert_refused(_raw(api, "POST", "/api/v1/notifications/batch", {"notifications": items}), 400,
                            "invalid_request", before_db, before_q)
    assert {"notifications.1.data.order", "notifications.2.content.push.data.k.0"} <= set(error["fields"]), error


def test_ordinary_unicode_in_free_form_json_is_accepted(api, recipient):
    r = _raw(api, "POST", "/api/v1/notifications",
             {**PUSH, "content": {"push": {"title": "t", "data": {"키": "값 📦", "tab": "a\tb"}}}})
    assert r.status_code == 202, r.content
    assert Notification.objects.get(id=r.json()["id"]).content["push"]["data"] == {"키": "값 📦", "tab": "a\tb"}


# --- 2. external ids PostgreSQL cannot hold -------------------------------------------------

BAD_EXTERNAL_IDS = [("nul", "%00"), ("nul inside", "ab%00cd"), ("control char", "a%01b"),
                    ("delete char", "a%7Fb"), ("too long", "x" * 256)]


@pytest.mark.parametrize("label,external_id", BAD_EXTERNAL_IDS, ids=[b[0] for b in BAD_EXTERNAL_IDS])
def test_impossible_external_id_in_url_is_4xx_on_every_recipient_route(api, recipient, label, external_id):
    before_db, before_q = db_counts(), queue_depths()
    base = f"/api/v1/recipients/{external_id}"
    r = api.put(base, {"name": "x"}, format="json")
    error = _assert_refused(r, 400, "invalid_request", before_db, before_q)
    assert "external_id" in error["fields"]
    for method, path, body in [("get", base, None), ("get", f"{base}/devices", None),
                               ("post", f"{base}/devices", {"platform": "android", "token": demo.fcm_token()}),
                               ("get", f"{base}/preferences", None),
                               ("put", f"{base}/preferences", {"preferences": []}),
                               ("delete", f"{base}/devices/1", None)]:
        r = getattr(api, method)(path, body, format="json") if body is not None else getattr(api, method)(path)
        assert r.status_code in (400, 404), (method, path, r.status_code, r.content)
        assert r.json()["error"]["code"] in ("invalid_request", "not_found")
    assert db_counts() == before_db and queue_depths() == before_q


def test_external_id_of_255_characters_is_accepted(api):
    r = api.put(f"/api/v1/recipients/{'x' * 255}", {"name": "long"}, format="json")
    assert r.status_code == 201, r.content
    assert api.get(f"/api/v1/recipients/{'x' * 255}").status_code == 200


@pytest.mark.parametrize("bad", ["a\u0001b", "a\u007fb", "a\u0085b", "x" * 256])
def test_control_characters_in_send_recipient_are_400(api, recipient, bad):
    before_db, before_q = db_counts(), queue_depths()
    error = _assert_refused(_raw(api, "POST", "/api/v1/notifications",
                                 {"recipient": bad, "content": {"sms": {"body": "hi"}}}),
                            400, "invalid_request", before_db, before_q)
    assert "recipient" in error["fields"]


# --- 3. device tokens over the unique index's row size --------------------------------------

def _long_endpoint(total: int) -> str:
    prefix = "https://push.example.net/wp/"
    return prefix + secrets.token_urlsafe(total)[: total - len(prefix)]


@pytest.mark.parametrize("label,device,field", [
    ("fcm 1025", {"platform": "android", "token": "a" * 1025}, "token"),
    ("fcm 4096", {"platform": "android", "token": "A" * 4096}, "token"),
    ("endpoint 2049", {"platform": "web", "subscription": browser_subscription(_long_endpoint(2049))}, "subscription"),
    ("endpoint 5000", {"platform": "web", "subscription": browser_subscription(_long_endpoint(5000))}, "subscription"),
    ("endpoint 1000 x 3-byte", {"platform": "web", "subscription": browser_subscription(
        "https://push.example.net/" + "가" * 1000)}, "subscription"),
    ("nul in endpoint", {"platform": "web", "subscription": browser_subscription("https://push.example.net/a\u0000b")},
     "subscription"),
])
def test_oversized_or_unstorable_device_token_is_400(api, recipient, label, device, field):
    before_db, before_q = db_counts(), queue_depths()
    error = _assert_refused(_raw(api, "POST", f"/api/v1/recipients/{recipient}/devices", device), 400,
                            "invalid_request", before_db, before_q)
    assert any(key == field or key.startswith(f"{field}.") for key in error["fields"]), error


def test_device_tokens_at_the_limits_are_accepted(api, recipient):
    r = api.post(f"/api/v1/recipients/{recipient}/devices", {"platform": "android", "token": "a" * 1024}, format="json")
    assert r.status_code == 201, r.content
    endpoint = _long_endpoint(2048)
    r = api.post(f"/api/v1/recipients/{recipient}/devices",
                 {"platform": "web", "subscription": browser_subscription(endpoint)}, format="json")
    assert r.status_code == 201, r.content
    assert Device.objects.get(id=r.json()["id"]).token == endpoint


# --- 4. concurrent creation of the same recipient ------------------------------------------

def test_put_that_loses_the_creation_race_updates_the_winner(api, app_key, monkeypatch):
    """Deterministic: the row appears between the view's look-up and its INSERT, as when a
    concurrent PUT of the same new id commits first. Without the retry this is an IntegrityError."""
    from notify.api import views

    real = views._find_recipient
    calls = []

    def lookup_then_lose_race(app_id, external_id):
        calls.append(external_id)
        if len(calls) == 1:
            Recipient.objects.create(app_id=app_id, external_id=external_id, name="winner", email="w@example.com")
            return None
        return real(app_id, external_id)

    monkeypatch.setattr(views, "_find_recipient", lookup_then_lose_race)
    r = api.put("/api/v1/recipients/race-1", {"name": "loser"}, format="json")
    assert r.status_code == 200, r.content
    row = Recipient.objects.get(app=app_key[0], external_id="race-1")
    # Applied as a partial update on top of the winner, as a later PUT would have been.
    assert (row.name, row.email) == ("loser", "w@example.com")
    assert r.json()["name"] == "loser"


def test_concurrent_puts_of_a_new_recipient_never_500(api, app_key):
    threads, statuses, barrier = 20, [], threading.Barrier(20)
    lock = threading.Lock()

    def put(i):
        try:
            client = Client(raise_request_exception=False, HTTP_AUTHORIZATION=f"Api-Key {app_key[1]}")
            barrier.wait(timeout=30)
            r = client.put("/api/v1/recipients/race-x", json.dumps({"name": f"n{i}"}), content_type="application/json")
            with lock:
                statuses.append(r.status_code)
        finally:
            connection.close()

    workers = [threading.Thread(target=put, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert sorted(statuses).count(201) == 1 and sorted(statuses).count(200) == threads - 1, statuses
    assert Recipient.objects.filter(app=app_key[0], external_id="race-x").count() == 1


# --- 5. deeply nested JSON ------------------------------------------------------------------

@pytest.mark.parametrize("path,method", [("/api/v1/notifications", "POST"), ("/api/v1/recipients/deep", "PUT")])
def test_deeply_nested_json_is_400_invalid_json(api, recipient, path, method):
    before_db, before_q = db_counts(), queue_depths()
    body = "[" * 20000 + "]" * 20000  # 40 KB: under the body limit, far over the recursion limit
    _assert_refused(_raw(api, method, path, body), 400, "invalid_json", before_db, before_q)


def test_json_over_the_nesting_limit_is_400_and_under_it_is_accepted(api, recipient):
    from notify.api.parsers import MAX_JSON_DEPTH

    def nested(depth):  # the body itself is one level, "data" another
        value = "leaf"
        for _ in range(depth - 2):
            value = {"n": value}
        return value

    before_db, before_q = db_counts(), queue_depths()
    too_deep = {**TEMPLATE, "data": {"name": "Ana", "order": "7", "deep": nested(MAX_JSON_DEPTH + 1)}}
    _assert_refused(_raw(api, "POST", "/api/v1/notifications", too_deep), 400, "invalid_json", before_db, before_q)
    ok = {**TEMPLATE, "data": {"name": "Ana", "order": "7", "deep": nested(MAX_JSON_DEPTH - 1)}}
    assert _raw(api, "POST", "/api/v1/notifications", ok).status_code == 202


# --- 6. chunked request bodies --------------------------------------------------------------

@pytest.mark.parametrize("method,path,body", [
    ("PUT", "/api/v1/recipients/chunky", {"name": "Chunky", "email": "c@example.com"}),
    ("POST", "/api/v1/notifications", {"recipient": USER, "content": {"sms": {"body": "hi"}}}),
    ("PUT", f"/api/v1/recipients/{USER}/preferences", {"preferences": [{"channel": "sms", "enabled": False}]}),
])
def test_chunked_body_is_411_length_required(api, recipient, method, path, body):
    before_db, before_q = db_counts(), queue_depths()
    # As gunicorn passes a chunked request: Transfer-Encoding set and no Content-Length, so
    # Django would read an empty body.
    r = _raw(api, method, path, body, HTTP_TRANSFER_ENCODING="chunked", CONTENT_LENGTH="")
    _assert_refused(r, 411, "length_required", before_db, before_q)
    r = _raw(api, method, path, body, HTTP_TRANSFER_ENCODING="gzip, Chunked", CONTENT_LENGTH="")
    _assert_refused(r, 411, "length_required", before_db, before_q)


def test_chunked_header_on_a_bodiless_method_is_served(api, recipient):
    assert api.get(f"/api/v1/recipients/{recipient}", HTTP_TRANSFER_ENCODING="chunked").status_code == 200


# --- 7. and 8. Idempotency-Key header -------------------------------------------------------

def test_batch_refuses_an_idempotency_key_header(api, recipient):
    before_db, before_q = db_counts(), queue_depths()
    items = [{"recipient": recipient, "content": {"sms": {"body": "x"}}, "event_id": "k-0"}]
    r = api.post("/api/v1/notifications/batch", {"notifications": items}, format="json", HTTP_IDEMPOTENCY_KEY="abc")
    error = _assert_refused(r, 400, "idempotency_key_not_supported", before_db, before_q)
    assert "event_id" in error["message"] and "Idempotency-Key" in error["fields"]


@pytest.mark.parametrize("label,key", [
    ("utf-8 as latin-1", "ключ-1".encode().decode("latin-1")),
    ("latin-1 letter", "clé"),
    ("space", "a b"),
    ("tab", "a\tb"),
    ("empty", ""),
    ("256 chars", "k" * 256),
])
def test_bad_idempotency_key_header_is_400(api, recipient, label, key):
    before_db, before_q = db_counts(), queue_depths()
    r = api.post("/api/v1/notifications", {"recipient": recipient, "content": {"sms": {"body": "x"}}}, format="json",
                 HTTP_IDEMPOTENCY_KEY=key)
    error = _assert_refused(r, 400, "invalid_request", before_db, before_q)
    assert "Idempotency-Key" in error["fields"]


def test_visible_ascii_idempotency_key_header_is_used(api, recipient):
    key = "~!" + "k" * 251 + "#}"
    body = {"recipient": recipient, "content": {"sms": {"body": "x"}}}
    first = api.post("/api/v1/notifications", body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert first.status_code == 202 and first.json()["event_id"] == key
    again = api.post("/api/v1/notifications", body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"


# --- 9. OpenAPI -----------------------------------------------------------------------------

def test_openapi_batch_response_is_not_the_request_schema_and_send_documents_the_header(client, db):
    import yaml

    r = client.get("/api/v1/schema")
    assert r.status_code == 200
    schema = yaml.safe_load(r.content)
    batch = schema["paths"]["/api/v1/notifications/batch"]["post"]
    request_ref = batch["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    response_ref = batch["responses"]["202"]["content"]["application/json"]["schema"]["$ref"]
    assert request_ref != response_ref
    accepted = schema["components"]["schemas"][response_ref.rsplit("/", 1)[-1]]
    assert accepted["properties"]["notifications"]["items"]["$ref"].endswith("/Accepted")
    send = schema["paths"]["/api/v1/notifications"]["post"]
    headers = [p for p in send.get("parameters", []) if p["in"] == "header"]
    assert [p["name"] for p in headers] == ["Idempotency-Key"]
    assert headers[0]["schema"].get("maxLength") == 255 or "255" in headers[0].get("description", "")


def test_openapi_generation_has_no_warnings():
    from drf_spectacular.drainage import GENERATOR_STATS
    from drf_spectacular.generators import SchemaGenerator

    GENERATOR_STATS.reset()
    SchemaGenerator().get_schema(request=None, public=True)
    assert not GENERATOR_STATS, (list(GENERATOR_STATS._warn_cache), list(GENERATOR_STATS._error_cache))


# --- 9. Found by a later user trial: text and ids are taken exactly as sent ------------------

def test_a_sends_recipient_is_matched_exactly_as_the_recipient_was_created(api):
    # DRF trimmed the send's recipient but not the PUT's path: " twin " reached "twin".
    for external_id, phone in ((" twin ", "+4915123456701"), ("twin", "+4915123456702"), (" alone", "+4915123456703")):
        r = api.put(f"/api/v1/recipients/{external_id.replace(' ', '%20')}", {"phone": phone}, format="json")
        assert r.status_code == 201, r.content
    sms = {"content": {"sms": {"body": "hi"}}}
    for external_id, phone in ((" twin ", "+4915123456701"), ("twin", "+4915123456702"), (" alone", "+4915123456703")):
        r = api.post("/api/v1/notifications", {"recipient": external_id, **sms}, format="json")
        assert r.status_code == 202, r.content
        assert [d["to"] for d in r.json()["deliveries"]] == [phone]
    before_db, before_q = db_counts(), queue_depths()
    _assert_refused(api.post("/api/v1/notifications", {"recipient": "alone", **sms}, format="json"),
                    404, "recipient_not_found", before_db, before_q)
    r = api.post("/api/v1/notifications/bulk", {"template": "order-shipped", "channels": ["sms"], "recipients": [
        {"recipient": " twin ", "data": {"name": "A", "order": "1"}}]}, format="json")
    assert r.status_code == 202, r.content
    assert list(Notification.objects.filter(template__name="order-shipped")
                .values_list("recipient__external_id", flat=True)) == [" twin "]


def test_an_event_id_is_taken_as_sent(api, recipient):
    body = {"recipient": USER, "content": {"sms": {"body": "hi"}}}
    assert api.post("/api/v1/notifications", {**body, "event_id": "k"}, format="json").status_code == 202
    r = api.post("/api/v1/notifications", {**body, "event_id": " k "}, format="json")
    assert r.status_code == 202 and r.get("Idempotent-Replayed") is None, r.content
    assert sorted(Notification.objects.values_list("idempotency_key", flat=True)) == [" k ", "k"]


def test_message_text_reaches_the_notification_as_sent(api, recipient):
    content = {"sms": {"body": "   indented code: 1234\n\n"},
               "push": {"title": " Title ", "body": "\tbody\n"},
               "email": {"subject": "  Subject", "text": "text\n\n", "html": "<p>html</p>\n"}}
    r = api.post("/api/v1/notifications", {"recipient": USER, "content": content}, format="json")
    assert r.status_code == 202, r.content
    stored = Notification.objects.get().content
    assert stored["sms"]["body"] == content["sms"]["body"]
    assert (stored["push"]["title"], stored["push"]["body"]) == (" Title ", "\tbody\n")
    assert (stored["email"]["subject"], stored["email"]["text"]) == ("  Subject", "text\n\n")


@pytest.mark.parametrize("content,field", [({"sms": {"body": "  \n "}}, "content.sms.body"),
                                           ({"email": {"subject": "   ", "text": "t"}}, "content.email.subject")])
def test_whitespace_alone_is_still_a_blank_text(api, recipient, content, field):
    before_db, before_q = db_counts(), queue_depths()
    error = _assert_refused(api.post("/api/v1/notifications", {"recipient": USER, "content": content}, format="json"),
                            400, "invalid_request", before_db, before_q)
    assert field in error["fields"], error


def test_every_spelling_of_one_api_key_counts_in_its_one_rate_limit_bucket(api, app_key, settings):
    # The bucket was the header's first 40 characters, while authentication strips the spaces
    # after "Api-Key": each extra space was a new bucket.
    settings.NOTIFY_API_RATE_LIMIT = "3/m"
    key = app_key[1]
    bad_body = {"recipient": "nobody", "template": "order-shipped", "unknown": 1}  # a 400 still counts
    answers = []
    for header in (f"Api-Key {key}", f"Api-Key  {key}", f"Api-Key {key} ", f"Api-Key      {key}",
                   f"Api-Key   {key}  "):
        api.credentials(HTTP_AUTHORIZATION=header)
        answers.append(api.post("/api/v1/notifications", bad_body, format="json").status_code)
    assert answers == [400, 400, 400, 429, 429]
    assert api.post("/api/v1/notifications", bad_body, format="json").json()["error"]["code"] == "rate_limited"


def test_push_text_of_whitespace_alone_is_still_empty_content(api, recipient):
    # Trimming had made it "", which the push channels refuse; kept verbatim, "  " passed as text.
    before_db, before_q = db_counts(), queue_depths()
    body = {"recipient": USER, "channels": ["fcm"], "content": {"push": {"title": "  ", "body": " \n "}}}
    _assert_refused(api.post("/api/v1/notifications", body, format="json"), 422, "empty_content", before_db, before_q)
