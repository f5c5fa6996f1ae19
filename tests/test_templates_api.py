"""The templates REST API (``/api/v1/templates``) in-process, against the real PostgreSQL, Redis
and RabbitMQ: templates created, versioned, published and archived through the API are what the
very next send uses (the Redis template cache included); previews; every invalid template is a
400 naming the field with nothing written; another app's key sees none of it."""

from __future__ import annotations

import copy
import json
import threading

import pytest
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from devtools import demo
from notify.models import Delivery, Notification, Template, TemplateVersion

pytestmark = pytest.mark.django_db(transaction=True)

USER = "tpl-user"

EN = {"sms": {"body": "Hi {{ name }}, order {{ order }} shipped"},
      "email": {"subject": "Order {{ order }}", "text": "Hello {{ name }}", "html": "<p>Hello {{ name }}</p>"},
      "push": {"title": "Order {{ order }}", "body": "On its way, {{ name }}", "data": {"order": "{{ order }}"}}}
KO = {"sms": {"body": "{{ name }}님, 주문 {{ order }} 발송"},
      "email": {"subject": "주문 {{ order }}", "text": "{{ name }}님 안녕하세요"}}
DATA = {"name": "Ana", "order": "A-7"}


def _body(name="shipping", **overrides):
    body = {"name": name, "category": "orders", "default_locale": "en", "content": {"en": EN}}
    body.update(overrides)
    return body


def _create(api, **overrides):
    r = api.post("/api/v1/templates", _body(**overrides), format="json")
    assert r.status_code == 201, r.content
    return r.json()


def _send(api, recipient=USER, **extra):
    return api.post("/api/v1/notifications", {"recipient": recipient, "template": "shipping", "data": DATA,
                                              "channels": ["sms"], **extra}, format="json")


def _sms_text(response) -> str:
    assert response.status_code == 202, response.content
    return Notification.objects.get(id=response.json()["id"]).content["sms"]["body"]


def _counts() -> tuple[int, int]:
    return Template.objects.count(), TemplateVersion.objects.count()


@pytest.fixture
def recipient(api):
    r = api.put(f"/api/v1/recipients/{USER}", {"name": "Ana", "locale": "en-GB", "email": "ana@example.com",
                                               "phone": "+4915123456789"}, format="json")
    assert r.status_code == 201, r.content
    return USER


@pytest.fixture
def other_api(app_key):
    """A client authenticated as a second app."""
    _, key = demo.create_app("other-app")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return client


# --- create, send, versions, drafts, archive ---------------------------------------------------

def test_created_template_is_used_by_a_send_and_named_in_its_answer(api, recipient):
    created = _create(api)
    assert created["name"] == "shipping" and created["category"] == "orders"
    assert created["latest_published"] == 1 and created["archived"] is False
    assert created["version"]["number"] == 1 and created["version"]["published_at"] is not None
    assert created["version"]["content"] == {"en": EN} and created["version"]["locales"] == ["en"]
    assert [v["number"] for v in created["versions"]] == [1]

    r = _send(api, channels=["sms", "email"])
    assert r.json()["template"] == {"name": "shipping", "version": 1, "locale": "en", "variant": None}
    notification = Notification.objects.get(id=r.json()["id"])
    assert notification.content["sms"]["body"] == "Hi Ana, order A-7 shipped"
    assert notification.content["email"] == {"subject": "Order A-7", "text": "Hello Ana", "html": "<p>Hello Ana</p>"}
    assert notification.category == "orders" and notification.template_version == 1

    listed = api.get("/api/v1/templates").json()
    assert {t["name"] for t in listed} == {"shipping", "order-shipped"}
    shipping = next(t for t in listed if t["name"] == "shipping")
    assert (shipping["latest_published"], shipping["latest_version"]) == (1, 1)


def test_a_send_gets_its_variant_and_the_answer_names_it(api, recipient):
    variants = [{"name": "a", "weight": 1, "content": {"en": {"sms": {"body": "A: {{ name }}"}}}},
                {"name": "b", "weight": 3, "content": {"en": {"sms": {"body": "B: {{ name }}"}}}}]
    created = _create(api, variants=variants)
    assert created["versions"][0]["variants"] == ["a", "b"]
    assert created["version"]["variants"] == variants
    r = _send(api)
    variant = r.json()["template"]["variant"]
    assert variant in ("a", "b")
    assert _sms_text(r) == f"{variant.upper()}: Ana"
    assert Delivery.objects.get(notification_id=r.json()["id"]).variant == variant
    # Deterministic per recipient and version.
    assert _send(api).json()["template"]["variant"] == variant


def test_a_new_version_is_used_by_the_next_send_and_a_pinned_send_keeps_v1(api, recipient):
    _create(api)
    assert _sms_text(_send(api)) == "Hi Ana, order A-7 shipped"  # v1 is now in the Redis cache
    r = api.post("/api/v1/templates/shipping/versions",
                 {"content": {"en": {"sms": {"body": "v2 for {{ name }}"}}}}, format="json")
    assert r.status_code == 201, r.content
    assert r.json()["number"] == 2 and r.json()["published_at"] is not None

    r = _send(api)
    assert r.json()["template"]["version"] == 2 and _sms_text(r) == "v2 for Ana"
    pinned = _send(api, template_version=1)
    assert pinned.json()["template"]["version"] == 1 and _sms_text(pinned) == "Hi Ana, order A-7 shipped"

    version = api.get("/api/v1/templates/shipping/versions/1").json()
    assert version["content"] == {"en": EN} and version["template"] == "shipping"
    assert [v["number"] for v in api.get("/api/v1/templates/shipping/versions").json()] == [1, 2]


def test_a_draft_is_not_used_until_published_and_publishing_makes_it_the_latest(api, recipient):
    _create(api)
    assert _send(api).json()["template"]["version"] == 1
    r = api.post("/api/v1/templates/shipping/versions",
                 {"content": {"en": {"sms": {"body": "draft {{ name }}"}}}, "publish": False}, format="json")
    assert r.status_code == 201 and r.json()["published_at"] is None
    # Cached entries now: the latest (v1) and, after this pinned send, "no published v2".
    r = _send(api)
    assert r.json()["template"]["version"] == 1 and _sms_text(r) == "Hi Ana, order A-7 shipped"
    pinned = _send(api, template_version=2)
    assert pinned.status_code == 404 and pinned.json()["error"]["code"] == "template_version_not_found"
    detail = api.get("/api/v1/templates/shipping").json()
    assert (detail["latest_published"], detail["latest_version"]) == (1, 2)
    assert detail["versions"][1]["published_at"] is None

    r = api.post("/api/v1/templates/shipping/versions/2/publish")
    assert r.status_code == 200, r.content
    published_at = r.json()["published_at"]
    assert published_at is not None
    # The very next send, and a send pinning v2, use it: the cache entries went with the save.
    r = _send(api)
    assert r.json()["template"]["version"] == 2 and _sms_text(r) == "draft Ana"
    assert _sms_text(_send(api, template_version=2)) == "draft Ana"
    assert api.get("/api/v1/templates/shipping").json()["latest_published"] == 2
    # Publishing again changes nothing; a published version never changes.
    again = api.post("/api/v1/templates/shipping/versions/2/publish")
    assert again.status_code == 200 and again.json()["published_at"] == published_at
    assert api.post("/api/v1/templates/shipping/versions/9/publish").status_code == 404


def test_archived_template_takes_no_sends_and_stays_readable(api, recipient):
    _create(api)
    assert _send(api).status_code == 202
    assert api.delete("/api/v1/templates/shipping").status_code == 204
    r = _send(api)
    assert r.status_code == 404 and r.json()["error"]["code"] == "template_not_found"
    assert _send(api, template_version=1).status_code == 404
    detail = api.get("/api/v1/templates/shipping")
    assert detail.status_code == 200 and detail.json()["archived"] is True
    assert detail.json()["archived_at"] is not None
    assert api.get("/api/v1/templates/shipping/versions/1").status_code == 200
    assert "shipping" not in {t["name"] for t in api.get("/api/v1/templates").json()}
    assert "shipping" in {t["name"] for t in api.get("/api/v1/templates?archived=true").json()}
    r = api.get("/api/v1/templates?archived=maybe")
    assert r.status_code == 400 and "archived" in r.json()["error"]["fields"]
    # Read-only from now on; archiving again is harmless; the name stays taken.
    for method, path, body in [("post", "/api/v1/templates/shipping/versions", {"content": {"en": EN}}),
                               ("post", "/api/v1/templates/shipping/versions/1/publish", None),
                               ("patch", "/api/v1/templates/shipping", {"category": "x"})]:
        r = getattr(api, method)(path, body, format="json")
        assert r.status_code == 409 and r.json()["error"]["code"] == "template_archived", (path, r.content)
    assert api.delete("/api/v1/templates/shipping").status_code == 204
    r = api.post("/api/v1/templates", _body(), format="json")
    assert r.status_code == 409 and r.json()["error"]["code"] == "template_exists"
    # A preview still works (e.g. to look at what was sent).
    assert api.post("/api/v1/templates/shipping/preview", {"data": DATA}, format="json").status_code == 200


def test_duplicate_name_is_409_and_writes_nothing(api):
    _create(api)
    before = _counts()
    r = api.post("/api/v1/templates", _body(content={"en": {"sms": {"body": "other"}}}), format="json")
    assert r.status_code == 409, r.content
    assert r.json()["error"]["code"] == "template_exists" and "name" in r.json()["error"]["fields"]
    assert _counts() == before


def test_patch_changes_settings_and_the_next_send_sees_them(api, recipient):
    _create(api, content={"en": EN, "ko": KO})
    api.put(f"/api/v1/recipients/{USER}", {"locale": "fr-FR"}, format="json")
    assert _send(api).json()["template"]["locale"] == "en"
    r = api.patch("/api/v1/templates/shipping", {"default_locale": "ko", "category": "shipping",
                                                 "truncate_push": True}, format="json")
    assert r.status_code == 200, r.content
    assert (r.json()["default_locale"], r.json()["category"], r.json()["truncate_push"]) == ("ko", "shipping", True)
    r = _send(api)
    assert r.json()["template"]["locale"] == "ko" and _sms_text(r) == "Ana님, 주문 A-7 발송"
    assert Notification.objects.get(id=r.json()["id"]).category == "shipping"


# --- locales --------------------------------------------------------------------------------

def test_locale_falls_back_from_region_to_language_to_the_default(api, recipient):
    _create(api, content={"en": EN, "ko": KO})

    def locale_for(locale):
        assert api.put(f"/api/v1/recipients/{USER}", {"locale": locale}, format="json").status_code == 200
        r = _send(api)
        return r.json()["template"]["locale"], _sms_text(r)

    assert locale_for("ko-KR") == ("ko", "Ana님, 주문 A-7 발송")
    assert locale_for("ko") == ("ko", "Ana님, 주문 A-7 발송")
    assert locale_for("fr-FR") == ("en", "Hi Ana, order A-7 shipped")
    # A version with the region's own content: ko-KR takes it, ko-KP still the language's.
    r = api.post("/api/v1/templates/shipping/versions",
                 {"content": {"en": EN, "ko": KO, "ko-KR": {"sms": {"body": "[KR] {{ name }}"}}}}, format="json")
    assert r.status_code == 201, r.content
    assert locale_for("ko-KR") == ("ko-KR", "[KR] Ana")
    assert locale_for("ko-KP") == ("ko", "Ana님, 주문 A-7 발송")
    assert locale_for("en-US") == ("en", "Hi Ana, order A-7 shipped")


# --- preview -----------------------------------------------------------------------------------

def test_preview_renders_every_channel_with_what_each_reports(api, recipient):
    _create(api, content={"en": EN, "ko": KO})
    r = api.post("/api/v1/templates/shipping/preview", {"data": DATA}, format="json")
    assert r.status_code == 200, r.content
    body = r.json()
    assert (body["template"], body["version"], body["locale"], body["variant"]) == ("shipping", 1, "en", None)
    channels = body["channels"]
    assert set(channels) == {"apns", "fcm", "webpush", "sms", "email"}
    assert channels["sms"]["content"] == {"body": "Hi Ana, order A-7 shipped"}
    assert channels["sms"]["content_info"] == {"encoding": "GSM-7", "segments": 1}
    for push in ("apns", "fcm", "webpush"):
        assert channels[push]["content"]["title"] == "Order A-7"
        info = channels[push]["content_info"]
        assert 0 < info["payload_bytes"] <= info["payload_limit"], (push, info)
        assert channels[push]["error"] is None
    assert channels["email"]["content"]["html"] == "<p>Hello Ana</p>"

    # As a send to this recipient would see it: its locale chooses ko (UCS-2 SMS).
    api.put(f"/api/v1/recipients/{USER}", {"locale": "ko-KR"}, format="json")
    r = api.post("/api/v1/templates/shipping/preview", {"data": DATA, "recipient": USER}, format="json")
    assert r.status_code == 200, r.content
    assert r.json()["locale"] == "ko" and set(r.json()["channels"]) == {"sms", "email"}
    assert r.json()["channels"]["sms"]["content_info"] == {"encoding": "UCS-2", "segments": 1}
    # An explicit locale wins over the recipient's.
    r = api.post("/api/v1/templates/shipping/preview", {"data": DATA, "recipient": USER, "locale": "en-US"},
                 format="json")
    assert r.json()["locale"] == "en"


def test_preview_of_a_draft_a_variant_and_a_provider_refusal(api):
    _create(api)
    long_body = {"en": {"push": {"title": "t", "body": "{{ text }}"}, "sms": {"body": "{{ text }}"}}}
    r = api.post("/api/v1/templates/shipping/versions", {"content": long_body, "publish": False, "variants": [
        {"name": "short", "weight": 1, "content": {"en": {"sms": {"body": "short {{ text|length }}"}}}}]},
        format="json")
    assert r.status_code == 201, r.content
    text = "가" * 1500
    r = api.post("/api/v1/templates/shipping/preview", {"data": {"text": text}, "version": 2}, format="json")
    assert r.status_code == 200, r.content
    channels = r.json()["channels"]  # the only variant is everyone's
    assert r.json()["variant"] == "short" and channels["sms"]["content"] == {"body": "short 1500"}
    r = api.post("/api/v1/templates/shipping/preview", {"data": {"text": text}, "version": 2, "variant": "short"},
                 format="json")
    assert r.json()["variant"] == "short"
    # Without variants: the push body is over the limit and the SMS over its segment cap.
    api.post("/api/v1/templates/shipping/versions", {"content": long_body, "publish": False}, format="json")
    r = api.post("/api/v1/templates/shipping/preview", {"data": {"text": text}, "version": 3}, format="json")
    channels = r.json()["channels"]
    assert channels["apns"]["error"]["code"] == "payload_too_large"
    assert channels["sms"]["error"]["code"] == "too_many_segments" and channels["sms"]["content_info"] == {}
    assert channels["fcm"]["error"]["code"] == "payload_too_large" and "email" not in channels
    # Drafts are previewed, never sent.
    assert TemplateVersion.objects.filter(template__name="shipping").count() == 3
    assert Notification.objects.count() == 0


def test_preview_names_every_missing_variable_and_refuses_unknown_things(api, recipient):
    _create(api)
    r = api.post("/api/v1/templates/shipping/preview", {"data": {}}, format="json")
    assert r.status_code == 400, r.content
    error = r.json()["error"]
    assert error["code"] == "missing_variables"
    assert error["fields"]["data"] == ["missing: name", "missing: order"]
    r = api.post("/api/v1/templates/shipping/preview", {"data": {"name": "x"}}, format="json")
    assert r.json()["error"]["fields"]["data"] == ["missing: order"]

    for body, code in [({"data": DATA, "version": 5}, "template_version_not_found"),
                       ({"data": DATA, "recipient": "nobody"}, "recipient_not_found"),
                       ({"data": DATA, "variant": "zzz"}, "variant_not_found")]:
        r = api.post("/api/v1/templates/shipping/preview", body, format="json")
        assert r.status_code == 404 and r.json()["error"]["code"] == code, (body, r.content)
    r = api.post("/api/v1/templates/nope/preview", {"data": DATA}, format="json")
    assert r.status_code == 404 and r.json()["error"]["code"] == "template_not_found"
    r = api.post("/api/v1/templates/shipping/preview", {"data": DATA, "colour": "red"}, format="json")
    assert r.status_code == 400 and "colour" in r.json()["error"]["fields"]


def test_preview_of_a_template_that_fails_with_this_data_is_422(api):
    _create(api, name="calls", content={"en": {"sms": {"body": "{{ n() }} {{ 1 / d }}"}}})
    for data in ({"n": 1, "d": 1}, {"n": "x", "d": 0}):
        r = api.post("/api/v1/templates/calls/preview", {"data": data}, format="json")
        assert r.status_code == 422, r.content
        assert r.json()["error"]["code"] == "template_error"


def test_preview_without_a_published_version_needs_one_named(api):
    _create(api, publish=False)
    r = api.post("/api/v1/templates/shipping/preview", {"data": DATA}, format="json")
    assert r.status_code == 404 and r.json()["error"]["code"] == "template_version_not_found"
    r = api.post("/api/v1/templates/shipping/preview", {"data": DATA, "version": 1}, format="json")
    assert r.status_code == 200 and r.json()["channels"]["sms"]["content"]["body"] == "Hi Ana, order A-7 shipped"


# --- validation: 400 with the field path, nothing written ---------------------------------------

def _variant(name="a", weight=1, content=None):
    return {"name": name, "weight": weight, "content": content or {"en": {"sms": {"body": "v {{ name }}"}}}}


def _with(path, value):
    """_body() with one nested key set (``content.en.sms.body``)."""
    body = copy.deepcopy(_body())
    *parents, last = path.split(".")
    node = body
    for key in parents:
        node = node[key]
    node[last] = value
    return body


BAD_TEMPLATES = [
    ("name not a slug", _body(name="bad name"), "name"),
    ("name missing", {k: v for k, v in _body().items() if k != "name"}, "name"),
    ("category not a slug", _body(category="a b"), "category"),
    ("unknown field", _body(colour="red"), "colour"),
    ("no content", {k: v for k, v in _body().items() if k != "content"}, "content"),
    ("no locale", _body(content={}), "content"),
    ("content not an object", _body(content=["en"]), "content"),
    ("locale with underscore", _body(content={"en_US": EN}, default_locale="en"), "content.en_US"),
    ("locale not a tag", _body(content={"en": EN, "english!": EN}), "content.english!"),
    ("same locale twice", _body(content={"en": EN, "EN": EN}), "content.EN"),
    ("locale without any group", _body(content={"en": {}}), "content.en"),
    ("unknown group", _with("content.en.fax", {"body": "x"}), "content.en.fax"),
    ("unknown part", _with("content.en.sms.bodyy", "x"), "content.en.sms.bodyy"),
    ("sms without body", _with("content.en.sms", {}), "content.en.sms.body"),
    ("sms too long", _with("content.en.sms.body", "x" * 1601), "content.en.sms.body"),
    ("badge not a number", _with("content.en.push.badge", "many"), "content.en.push.badge"),
    ("literal url not a url", _with("content.en.push.url", "not a url"), "content.en.push.url"),
    ("unclosed variable", _with("content.en.sms.body", "Hi {{ name"), "content.en.sms.body"),
    ("unclosed block", _with("content.en.email.text", "{% if a %}x"), "content.en.email.text"),
    ("html syntax", _with("content.en.email.html", "<p>{{ name }</p>"), "content.en.email.html"),
    ("push data syntax", _with("content.en.push.data", {"deep": {"link": "{{ order"}}),
     "content.en.push.data.deep.link"),
    ("templated url syntax", _with("content.en.push.url", "https://x.example/{{ order"), "content.en.push.url"),
    ("unknown filter", _with("content.en.sms.body", "{{ name|shout }}"), "content.en.sms.body"),
    ("unknown test in if", _with("content.en.sms.body", "{% if name is odd_ish %}x{% endif %}"), "content.en.sms.body"),
    ("include", _with("content.en.sms.body", "{% include 'other' %}"), "content.en.sms.body"),
    ("too deeply nested", _with("content.en.sms.body", "{% for i in x %}" * 25 + "{% endfor %}" * 25),
     "content.en.sms.body"),
    ("default locale not in content", _body(default_locale="ko"), "default_locale"),
    ("default locale not a tag", _body(default_locale="english"), "default_locale"),
    ("variant without default locale", _body(variants=[_variant(content={"ko": KO})]), "variants.0.content"),
    ("variant name not a slug", _body(variants=[_variant(name="A B")]), "variants.0.name"),
    ("variant name too long", _body(variants=[_variant(name="v" * 33)]), "variants.0.name"),
    ("duplicate variant", _body(variants=[_variant("a"), _variant("b"), _variant("a")]), "variants.2.name"),
    ("zero weight", _body(variants=[_variant(weight=0)]), "variants.0.weight"),
    ("negative weight", _body(variants=[_variant(weight=-2)]), "variants.0.weight"),
    ("fractional weight", _body(variants=[_variant(weight=1.5)]), "variants.0.weight"),
    ("weight missing", _body(variants=[{"name": "a", "content": {"en": EN}}]), "variants.0.weight"),
    ("27 variants", _body(variants=[_variant(f"v{i}") for i in range(27)]), "variants"),
    ("variant syntax", _body(variants=[_variant(content={"en": {"sms": {"body": "{{"}}})]),
     "variants.0.content.en.sms.body"),
    ("variant unknown field", _body(variants=[{**_variant(), "share": 5}]), "variants.0.share"),
    ("publish not a boolean", _body(publish="later"), "publish"),
]


@pytest.mark.parametrize("label,body,field", BAD_TEMPLATES, ids=[b[0] for b in BAD_TEMPLATES])
def test_invalid_template_is_400_naming_the_field_and_writes_nothing(api, label, body, field):
    before = _counts()
    r = api.post("/api/v1/templates", body, format="json")
    assert r.status_code == 400, r.content
    error = r.json()["error"]
    assert error["code"] == "invalid_request"
    assert field in error["fields"], error
    assert _counts() == before


def test_26_variants_and_a_templated_url_are_accepted(api):
    content = {"en": {"push": {"title": "t", "url": "https://shop.example/orders/{{ order }}",
                               "image": "https://cdn.example/a.png"}}}
    created = _create(api, content=content, variants=[_variant(chr(ord("a") + i)) for i in range(26)])
    assert len(created["versions"][0]["variants"]) == 26


def test_unstorable_locale_key_is_400_with_an_encodable_answer(api):
    before = _counts()
    raw = json.dumps(_body()).replace('"en": {', '"\\ud800x": {', 1).encode()
    r = api.generic("POST", "/api/v1/templates", raw, content_type="application/json")
    assert r.status_code == 400, r.content
    assert "content.\\ud800x" in r.json()["error"]["fields"]
    assert _counts() == before


@pytest.mark.parametrize("path,raw", [
    ("/api/v1/templates", '{"name": "t", "content": {"en": {"sms": {"body": "x", "\\ud800": "y"}}}}'),
    ("/api/v1/notifications", '{"recipient": "r", "content": {"sms": {"body": "x", "\\ud800": "y"}}}'),
])
def test_unknown_field_named_with_a_lone_surrogate_is_400_not_500(api, path, raw):
    r = api.generic("POST", path, raw.encode(), content_type="application/json")
    assert r.status_code == 400, r.content
    assert any(key.endswith("sms.\\ud800") for key in r.json()["error"]["fields"]), r.json()


BAD_VERSIONS = [
    ({"content": {"ko": KO}}, "content"),
    ({"content": {"en": {"sms": {"body": "{% endif %}"}}}}, "content.en.sms.body"),
    ({"content": {"en": EN}, "variants": [_variant(content={"ko": KO})]}, "variants.0.content"),
    ({"content": {"en": EN}, "default_locale": "en"}, "default_locale"),
    ({"variants": []}, "content"),
]


@pytest.mark.parametrize("body,field", BAD_VERSIONS)
def test_invalid_new_version_is_400_and_writes_nothing(api, body, field):
    _create(api)
    before = _counts()
    r = api.post("/api/v1/templates/shipping/versions", body, format="json")
    assert r.status_code == 400, r.content
    assert r.json()["error"]["code"] == "invalid_request" and field in r.json()["error"]["fields"]
    assert _counts() == before


BAD_PATCHES = [
    ({"content": {"en": EN}}, "content"),
    ({"variants": []}, "variants"),
    ({"name": "renamed"}, "name"),
    ({"default_locale": "ko"}, "default_locale"),  # not a locale of the latest version
    ({"default_locale": "ko_KR"}, "default_locale"),
    ({"category": "not a slug"}, "category"),
    ({"truncate_push": "sometimes"}, "truncate_push"),
]


@pytest.mark.parametrize("body,field", BAD_PATCHES)
def test_invalid_patch_is_400_and_changes_nothing(api, body, field):
    _create(api)
    before = api.get("/api/v1/templates/shipping").json()
    r = api.patch("/api/v1/templates/shipping", body, format="json")
    assert r.status_code == 400, r.content
    assert r.json()["error"]["code"] == "invalid_request" and field in r.json()["error"]["fields"]
    assert api.get("/api/v1/templates/shipping").json() == before


def test_default_locale_must_be_in_the_latest_version_and_every_later_draft(api):
    _create(api, content={"en": EN, "ko": KO})
    api.post("/api/v1/templates/shipping/versions", {"content": {"en": EN}, "publish": False}, format="json")
    r = api.patch("/api/v1/templates/shipping", {"default_locale": "ko"}, format="json")
    assert r.status_code == 400 and "version(s) 2" in r.json()["error"]["fields"]["default_locale"][0]
    # Case-insensitive, as sends match locales.
    r = api.patch("/api/v1/templates/shipping", {"default_locale": "EN"}, format="json")
    assert r.status_code == 200, r.content


# --- isolation between apps ----------------------------------------------------------------------

def test_another_apps_key_sees_and_changes_none_of_the_templates(api, other_api, recipient):
    _create(api, variants=[_variant()])
    api.post("/api/v1/templates/shipping/versions", {"content": {"en": EN}, "publish": False}, format="json")
    before = (api.get("/api/v1/templates/shipping").json(), _counts())

    assert "shipping" not in {t["name"] for t in other_api.get("/api/v1/templates?archived=true").json()}
    calls = [("get", "/api/v1/templates/shipping", None),
             ("patch", "/api/v1/templates/shipping", {"category": "stolen"}),
             ("delete", "/api/v1/templates/shipping", None),
             ("get", "/api/v1/templates/shipping/versions", None),
             ("post", "/api/v1/templates/shipping/versions", {"content": {"en": EN}}),
             ("get", "/api/v1/templates/shipping/versions/1", None),
             ("post", "/api/v1/templates/shipping/versions/2/publish", None),
             ("post", "/api/v1/templates/shipping/preview", {"data": DATA})]
    for method, path, body in calls:
        r = getattr(other_api, method)(path, body, format="json")
        assert r.status_code == 404, (method, path, r.content)
        assert r.json()["error"]["code"] == "template_not_found", (method, path, r.content)
    assert (api.get("/api/v1/templates/shipping").json(), _counts()) == before

    # The name is per app: the other app makes its own, and each app's sends use their own.
    other = other_api.post("/api/v1/templates", _body(content={"en": {"sms": {"body": "other {{ name }}"}}}),
                           format="json")
    assert other.status_code == 201, other.content
    assert _sms_text(_send(api)) == "v Ana"  # its only variant
    other_api.put(f"/api/v1/recipients/{USER}", {"phone": "+4915123456780"}, format="json")
    assert _sms_text(_send(other_api)) == "other Ana"


@pytest.mark.parametrize("path", ["/api/v1/templates", "/api/v1/templates/shipping",
                                  "/api/v1/templates/shipping/versions/1"])
def test_template_endpoints_need_an_api_key(client, api, path):
    _create(api)
    r = client.get(path)
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"


def test_unknown_template_and_version_are_404(api):
    _create(api)
    for path in ["/api/v1/templates/nope", "/api/v1/templates/nope/versions", "/api/v1/templates/shipping/versions/7",
                 "/api/v1/templates/shipping/versions/99999999999999999999", "/api/v1/templates/not%20a%20slug"]:
        r = api.get(path)
        assert r.status_code == 404, (path, r.content)
        assert r.json()["error"]["code"] in ("template_not_found", "template_version_not_found", "not_found")


# --- concurrency -----------------------------------------------------------------------------------

def _concurrently(app_key, count, call):
    statuses, lock, barrier = [], threading.Lock(), threading.Barrier(count)

    def run(i):
        try:
            client = Client(raise_request_exception=False, HTTP_AUTHORIZATION=f"Api-Key {app_key[1]}")
            barrier.wait(timeout=30)
            r = call(client, i)
            with lock:
                statuses.append((r.status_code, r.json() if r.content else None))
        finally:
            connection.close()

    workers = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    return statuses


def test_concurrent_new_versions_get_distinct_numbers(api, app_key):
    _create(api)
    body = json.dumps({"content": {"en": {"sms": {"body": "x {{ name }}"}}}})
    statuses = _concurrently(app_key, 8, lambda client, i: client.post(
        "/api/v1/templates/shipping/versions", body, content_type="application/json"))
    assert sorted(s for s, _ in statuses) == [201] * 8, statuses
    assert sorted(b["number"] for _, b in statuses) == list(range(2, 10))


def test_concurrent_creation_of_one_name_makes_one_template(api, app_key):
    body = json.dumps(_body(name="racy"))
    statuses = _concurrently(app_key, 8, lambda client, i: client.post(
        "/api/v1/templates", body, content_type="application/json"))
    assert sorted(s for s, _ in statuses) == [201] + [409] * 7, statuses
    assert Template.objects.filter(name="racy").count() == 1
    assert TemplateVersion.objects.filter(template__name="racy").count() == 1
