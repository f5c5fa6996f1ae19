"""What a send's content becomes: templates rendered for the recipient (variables, versions,
locales, A/B variants), text literal and HTML escaped, push bodies cut on grapheme clusters,
headers that cannot break a line, SMS segment caps; checked in process through the API
(nothing written or queued for a refused send) and end to end through the stack to the
providers' wires.

Templates are made through the ORM (a published version has ``published_at``)."""

from __future__ import annotations

import secrets
from collections import Counter
from email.policy import default as DEFAULT_POLICY

import pytest
import regex
from django.utils import timezone

from channels.apns import MAX_PAYLOAD_BYTES, APNsChannel
from channels.errors import InvalidMessage
from devtools import demo
from notify.models import Delivery, Notification, Template, TemplateVersion
from notify.rendering import assign_variant
from notify.truncation import ELLIPSIS
from tests.conftest import wait_until
from tests.helpers import db_counts

pytestmark = pytest.mark.django_db(transaction=True)

#: A name that HTML would change and a text part must not: a quote, an ampersand, double
#: quotes, angle brackets.
TRICKY = 'O\'Brien & "x" <y>'
#: TRICKY as Jinja2's autoescape (markupsafe) writes it in HTML.
TRICKY_HTML = "O&#39;Brien &amp; &#34;x&#34; &lt;y&gt;"


# -- helpers -------------------------------------------------------------------------------------
def make_template(app, name: str, content: dict | None = None, *, number: int = 1, variants=(),
                  published: bool = True, **fields) -> Template:
    """A template of ``app`` (created on first use) with version ``number`` of ``content``
    (``{locale: {"push": ..., "sms": ..., "email": ...}}``)."""
    template, _ = Template.objects.get_or_create(app=app, name=name, defaults=fields)
    TemplateVersion.objects.create(template=template, number=number, content=content or {},
                                   variants=list(variants),
                                   published_at=timezone.now() if published else None)
    return template


@pytest.fixture
def app(app_key):
    return app_key[0]


@pytest.fixture
def person(api):
    """``person(user, devices=("ios",), phone=..., email=..., locale=...)``: a recipient
    registered through the API."""
    def make(user: str, devices=(), phone="", email="", locale="en"):
        r = api.put(f"/api/v1/recipients/{user}", {"email": email, "phone": phone, "locale": locale},
                    format="json")
        assert r.status_code == 201, r.content
        for platform in devices:
            token = secrets.token_hex(32) if platform == "ios" else demo.fcm_token()
            r = api.post(f"/api/v1/recipients/{user}/devices", {"platform": platform, "token": token},
                         format="json")
            assert r.status_code == 201, r.content
        return user
    return make


def send(api, body):
    return api.post("/api/v1/notifications", body, format="json")


def error(response) -> dict:
    return response.json()["error"]


# -- missing variables -------------------------------------------------------------------------
RESET = {"en": {"sms": {"body": "Reset: {{ reset_url }}"},
                "email": {"subject": "Reset your password", "text": "Reset: {{ reset_url }}"}}}


def test_a_missing_variable_is_a_400_naming_it_and_nothing_is_written_or_queued(api, app, person,
                                                                                  outbox_listener):
    make_template(app, "reset", RESET)
    user = person("forgetful", phone="+14155550123", email="f@example.com")
    before = db_counts()
    r = send(api, {"recipient": user, "template": "reset", "data": {}})
    assert r.status_code == 400, r.content
    assert error(r)["code"] == "missing_variables"
    assert any("reset_url" in message for message in error(r)["fields"]["data"]), r.content
    assert db_counts() == before and outbox_listener.received() == []
    # The same send with the variable goes through (the refusal was about the variable only).
    r = send(api, {"recipient": user, "template": "reset", "data": {"reset_url": "https://x.test/r/1"}})
    assert r.status_code == 202, r.content


def test_every_missing_variable_is_named(api, app, person, outbox_listener):
    make_template(app, "two", {"en": {"sms": {"body": "{{ first }} and {{ second }} ({{ given }})"}}})
    user = person("two-missing", phone="+14155550123")
    before = db_counts()
    r = send(api, {"recipient": user, "template": "two", "data": {"given": 1}})
    assert r.status_code == 400 and error(r)["code"] == "missing_variables", r.content
    named = " ".join(error(r)["fields"]["data"])
    assert "first" in named and "second" in named and "given" not in named
    assert db_counts() == before and outbox_listener.received() == []


def test_a_batch_with_one_item_missing_a_variable_is_refused_naming_only_that_item(api, app, person,
                                                                                   outbox_listener):
    make_template(app, "reset", RESET)
    users = [person(f"batch-{i}", phone="+14155550123") for i in range(3)]
    items = [{"recipient": user, "template": "reset", "event_id": f"reset-{i}",
              "data": {} if i == 1 else {"reset_url": f"https://x.test/r/{i}"}}
             for i, user in enumerate(users)]
    before = db_counts()
    r = api.post("/api/v1/notifications/batch", {"notifications": items}, format="json")
    assert r.status_code == 400, r.content
    assert error(r)["code"] == "batch_rejected"
    assert set(error(r)["items"]) == {"1"}, r.content
    refused = error(r)["items"]["1"]
    assert refused["code"] == "missing_variables" and "reset_url" in str(refused["fields"]["data"])
    assert db_counts() == before and outbox_listener.received() == []


# -- versions and locales ------------------------------------------------------------------------
def test_a_pinned_version_is_used_after_a_newer_one_is_published_and_drafts_never(api, app, person):
    def version(text):
        return {"en": {"sms": {"body": text + " {{ name }}"}}}

    template = make_template(app, "versioned", version("one"))
    user = person("pinned", phone="+14155550123")

    def sent(**extra):
        r = send(api, {"recipient": user, "template": "versioned", "data": {"name": "Ann"}, **extra})
        assert r.status_code == 202, r.content
        return r.json()["template"]["version"], Notification.objects.get(id=r.json()["id"]).content["sms"]["body"]

    assert sent() == (1, "one Ann")
    make_template(app, "versioned", version("two"), number=2)
    assert sent() == (2, "two Ann")  # latest published
    assert sent(template_version=1) == (1, "one Ann")  # pinned
    make_template(app, "versioned", version("draft"), number=3, published=False)
    assert sent() == (2, "two Ann")  # a draft is not the latest
    r = send(api, {"recipient": user, "template": "versioned", "data": {"name": "Ann"}, "template_version": 3})
    assert r.status_code == 404 and error(r)["code"] == "template_version_not_found", r.content
    assert template.versions.count() == 3


@pytest.mark.parametrize("available, wanted, used", [
    (("ko-KR", "ko", "en"), "ko-KR", "ko-KR"),  # the recipient's own locale
    (("ko", "en"), "ko-KR", "ko"),  # its language
    (("ko", "en"), "ko", "ko"),
    (("ja", "en"), "ko-KR", "en"),  # the template's default (not the first locale)
    (("ko", "en"), "fr-CA", "en"),
])
def test_the_locale_falls_back_from_region_to_language_to_the_default(api, app, person, available, wanted, used):
    make_template(app, "greeting", {loc: {"sms": {"body": f"[{loc}] {{{{ name }}}}"}} for loc in available},
                  default_locale="en")
    user = person("localised", phone="+14155550123", locale=wanted)
    r = send(api, {"recipient": user, "template": "greeting", "data": {"name": "지우"}})
    assert r.status_code == 202, r.content
    assert r.json()["template"]["locale"] == used
    notification = Notification.objects.get(id=r.json()["id"])
    assert notification.locale == used and notification.content["sms"]["body"] == f"[{used}] 지우"


# -- push size: only the channels used, truncation on grapheme clusters -------------------------
HUGE_PUSH = {"title": "Big", "body": "가" * 2000}  # 6000 UTF-8 bytes: over APNs' 4096


def test_a_push_part_over_the_limit_refuses_only_sends_that_use_push(api, app, person):
    make_template(app, "big-push", {"en": {"push": HUGE_PUSH, "email": {"subject": "s", "text": "t"}}})
    user = person("mail-and-phone", devices=("ios",), email="m@example.com")
    r = send(api, {"recipient": user, "template": "big-push", "channels": ["email"]})
    assert r.status_code == 202, r.content
    assert [d["channel"] for d in r.json()["deliveries"]] == ["email"]
    r = send(api, {"recipient": user, "template": "big-push", "channels": ["apns"]})
    assert r.status_code == 422 and error(r)["code"] == "payload_too_large", r.content
    assert "content.push" in error(r)["fields"]


#: Korean, a waving hand with a skin tone (2 code points, 1 cluster), a woman technologist with
#: a skin tone (4 code points joined by a ZWJ, 1 cluster): 40 UTF-8 bytes a repeat.
GREETING = "안녕하세요 👋🏽👩🏾‍💻 "
#: With this title the longest body that fits, counted in code points, ends inside a cluster
#: (the waving hand without its skin tone): a cut that ignores clusters would split one.
LONG_PUSH_TITLE = "공지사항"


def test_a_long_korean_push_body_with_emoji_is_cut_on_whole_grapheme_clusters(api, app, person):
    original = (GREETING * 150).strip()  # about 6000 bytes
    clusters = regex.findall(r"\X", original)
    assert len(original.encode()) > MAX_PAYLOAD_BYTES and len(clusters) < len(original)
    make_template(app, "long-push", {"ko": {"push": {"title": "{{ title }}", "body": original}}},
                  default_locale="ko", truncate_push=True)
    user = person("reader", devices=("ios",), locale="ko-KR")
    r = send(api, {"recipient": user, "template": "long-push", "data": {"title": LONG_PUSH_TITLE}})
    assert r.status_code == 202, r.content
    (delivery,) = r.json()["deliveries"]
    assert delivery["channel"] == "apns" and delivery["status"] == "queued"

    push = Notification.objects.get(id=r.json()["id"]).content["push"]
    body = push["body"]
    assert push["title"] == LONG_PUSH_TITLE
    assert body.endswith(ELLIPSIS) and len(body) < len(original)
    assert body.encode("utf-8").decode("utf-8") == body  # valid UTF-8, no lone surrogate
    info = APNsChannel.check_content(push)
    assert 0 < info["payload_bytes"] <= MAX_PAYLOAD_BYTES, info
    assert info["payload_bytes"] > MAX_PAYLOAD_BYTES - 64  # cut to fit, not cut to nothing
    assert delivery["content_info"] == info

    kept = body[:-len(ELLIPSIS)]
    # The kept text is whole clusters of the original: an emoji without its skin tone, or half
    # of a ZWJ sequence, would make it differ from the original's clusters in the last one.
    assert kept == whole_clusters(kept, clusters), (kept[-8:], clusters[len(regex.findall(r"\X", kept)) - 1])
    # The premise: the longest body that fits, counted in code points, would split a cluster.
    by_code_points = next(original[:n] for n in range(len(original), 0, -1)
                          if fits_apns({"title": LONG_PUSH_TITLE, "body": original[:n].rstrip() + ELLIPSIS}))
    assert by_code_points != whole_clusters(by_code_points, clusters)


def whole_clusters(prefix: str, clusters: list[str]) -> str:
    """As many of ``clusters`` as ``prefix`` has clusters, joined: ``prefix`` itself when it
    ends on a cluster boundary of the text ``clusters`` came from."""
    return "".join(clusters[:len(regex.findall(r"\X", prefix))])


def fits_apns(push: dict) -> bool:
    try:
        APNsChannel.check_content(push)
    except InvalidMessage:
        return False
    return True


def test_the_same_push_body_without_truncate_push_is_a_422(api, app, person, outbox_listener):
    make_template(app, "long-push", {"ko": {"push": {"title": "공지", "body": (GREETING * 150).strip()}}},
                  default_locale="ko", truncate_push=False)
    user = person("reader", devices=("ios",), locale="ko-KR")
    before = db_counts()
    r = send(api, {"recipient": user, "template": "long-push"})
    assert r.status_code == 422 and error(r)["code"] == "payload_too_large", r.content
    assert db_counts() == before and outbox_listener.received() == []


# -- header injection, SMS segments -------------------------------------------------------------
@pytest.mark.parametrize("subject", ["Hi\r\nBcc: someone@example.com", "Hi\u2028Bcc: someone@example.com"])
def test_a_rendered_subject_that_breaks_a_header_line_is_422_and_nothing_is_written(api, app, person,
                                                                                     outbox_listener, subject):
    make_template(app, "subject", {"en": {"email": {"subject": "{{ subject }}", "text": "t"}}})
    user = person("mailbox", email="m@example.com")
    before = db_counts()
    r = send(api, {"recipient": user, "template": "subject", "data": {"subject": subject}})
    assert r.status_code == 422 and error(r)["code"] == "invalid_header", r.content
    assert db_counts() == before and outbox_listener.received() == []


@pytest.mark.parametrize("from_name", ["Shop\r\nBcc: someone@example.com", "Shop\u2028Bcc: someone@example.com"])
def test_a_display_name_that_breaks_a_header_line_is_422(api, app, person, outbox_listener, from_name):
    user = person("mailbox", email="m@example.com")
    before = db_counts()
    r = send(api, {"recipient": user, "content": {"email": {"from_name": from_name, "subject": "s", "text": "t"}}})
    assert r.status_code == 422 and error(r)["code"] == "invalid_header", r.content
    assert db_counts() == before and outbox_listener.received() == []


def test_an_sms_over_the_deployments_segment_cap_is_a_422(api, app, person, settings):
    settings.NOTIFY_PROVIDER_ENV = {**settings.NOTIFY_PROVIDER_ENV,
                                    "twilio": {**settings.NOTIFY_PROVIDER_ENV["twilio"], "max_segments": "2"}}
    make_template(app, "sms-long", {"en": {"sms": {"body": "{{ text }}"}}})
    user = person("texter", phone="+14155550123")
    r = send(api, {"recipient": user, "template": "sms-long", "data": {"text": "a" * 306}})  # 2 × 153
    assert r.status_code == 202, r.content
    assert r.json()["deliveries"][0]["content_info"] == {"encoding": "GSM-7", "segments": 2}
    r = send(api, {"recipient": user, "template": "sms-long", "data": {"text": "a" * 307}})  # 3 segments
    assert r.status_code == 422 and error(r)["code"] == "too_many_segments", r.content
    r = send(api, {"recipient": user, "template": "sms-long", "data": {"text": "가" * 135}})  # 3 × 67 UCS-2
    assert r.status_code == 422 and error(r)["code"] == "too_many_segments", r.content


# -- A/B variants --------------------------------------------------------------------------------
AB = [{"name": "a", "weight": 50}, {"name": "b", "weight": 50}]


def test_assign_variant_is_stable_per_recipient_and_experiment():
    for i in range(200):
        first = assign_variant(AB, f"7:user-{i}", "12:3")
        assert all(assign_variant(AB, f"7:user-{i}", "12:3") is first for _ in range(3))
    assert assign_variant([], "7:user-1", "12:3") is None


def test_assign_variant_changes_with_the_experiment():
    users = [f"7:user-{i}" for i in range(1000)]
    moved = sum(assign_variant(AB, u, "12:3")["name"] != assign_variant(AB, u, "12:4")["name"] for u in users)
    assert 400 <= moved <= 600  # independent experiments: about half of the recipients move


@pytest.mark.parametrize("weights", [(50, 50), (90, 10), (1, 3)])
def test_assign_variant_splits_by_weight_within_two_percent(weights):
    variants = [{"name": str(i), "weight": w} for i, w in enumerate(weights)]
    counts = Counter(assign_variant(variants, f"3:recipient-{i}", "41:2")["name"] for i in range(10_000))
    for i, weight in enumerate(weights):
        share = counts[str(i)] / 10_000
        assert abs(share - weight / sum(weights)) <= 0.02, (weights, counts)


def test_a_recipient_keeps_its_variant_on_every_send_and_each_delivery_records_it(api, app, person):
    variants = [{"name": name, "weight": 50, "content": {"en": {
        "sms": {"body": f"[{name}] Hi {{{{ name }}}}"},
        "email": {"subject": f"[{name}] Hi", "text": "Hi {{ name }}"}}}} for name in ("a", "b")]
    make_template(app, "ab", {"en": {"sms": {"body": "control"}}}, variants=variants)
    seen = set()
    for i in range(40):
        user = person(f"ab-{i}", phone="+14155550123", email=f"ab{i}@example.com")
        answers = [send(api, {"recipient": user, "template": "ab", "data": {"name": "Jo"}}) for _ in range(3)]
        assert all(r.status_code == 202 for r in answers), answers[0].content
        names = {r.json()["template"]["variant"] for r in answers}
        assert len(names) == 1, names
        (variant,) = names
        assert variant in ("a", "b")
        for r in answers:
            deliveries = Delivery.objects.filter(notification_id=r.json()["id"])
            assert {d.channel for d in deliveries} == {"sms", "email"}
            assert {d.variant for d in deliveries} == {variant}
            content = Notification.objects.get(id=r.json()["id"]).content
            assert content["sms"]["body"] == f"[{variant}] Hi Jo" and content["email"]["subject"] == f"[{variant}] Hi"
        seen.add(variant)
        if seen == {"a", "b"} and i >= 3:
            break
    assert seen == {"a", "b"}  # both are used (all 40 recipients in one variant: p = 2**-39)


# -- end to end: text literal, HTML escaped, on every provider's wire ---------------------------
@pytest.fixture
def stack_key(stack, transactional_db):
    return demo.create_app("content-e2e")


@pytest.mark.stack
def test_a_name_with_quotes_and_angle_brackets_is_literal_in_text_and_escaped_in_html(stack, stack_key, control):
    app, key = stack_key
    make_template(app, "tricky", {"en": {
        "push": {"title": "Hello {{ name }}", "body": "For {{ name }}: your order shipped"},
        "sms": {"body": "Hi {{ name }}, your order shipped"},
        "email": {"from_name": "{{ name }}", "subject": "Order for {{ name }}",
                  "text": "Dear {{ name }},\nyour order shipped.", "html": "<p>Dear {{ name }},</p>"}}})
    status, body = demo.call(stack.api_url, key, "PUT", "/api/v1/recipients/obrien",
                             {"name": "Pat", "locale": "en", "email": "pat@example.com", "phone": "+14155550123"})
    assert status in (200, 201), body
    token = secrets.token_hex(32)
    status, body = demo.call(stack.api_url, key, "POST", "/api/v1/recipients/obrien/devices",
                             {"platform": "ios", "token": token})
    assert status == 201, body

    status, accepted = demo.call(stack.api_url, key, "POST", "/api/v1/notifications",
                                 {"recipient": "obrien", "template": "tricky", "data": {"name": TRICKY}})
    assert status == 202, accepted
    ids = {d["channel"]: d["id"] for d in accepted["deliveries"]}
    assert set(ids) == {"apns", "sms", "email"}, accepted

    def arrived():
        records = {}
        for provider, channel in (("apns", "apns"), ("twilio", "sms"), ("ses", "email")):
            found = control.records(provider, delivery_id=ids[channel], accepted=True)
            if not found:
                return None
            records[channel] = found[0]
        return records

    records = wait_until(arrived, timeout=30, message="the three deliveries at the sandbox")

    alert = records["apns"]["body"]["aps"]["alert"]
    assert alert == {"title": f"Hello {TRICKY}", "body": f"For {TRICKY}: your order shipped"}
    assert records["sms"]["body"]["Body"] == f"Hi {TRICKY}, your order shipped"

    mail = records["email"]["extra"]
    assert mail["subject"] == f"Order for {TRICKY}"
    # The body as written, then the preference-page footer every non-required email carries
    # (the HTML after the open pixel: tracking is on by default).
    body, footer = mail["text"].split("\n\n-- \n")
    assert body == f"Dear {TRICKY},\nyour order shipped." and "/preferences/" in footer
    assert mail["html"].startswith(f"<p>Dear {TRICKY_HTML},</p><img src=") and "/preferences/" in mail["html"]
    assert "<y>" not in mail["html"]
    # The display name went out quoted (it has specials) and reads back as written.
    (sender,) = DEFAULT_POLICY.header_factory("From", mail["from_address"]).addresses
    assert (sender.display_name, sender.addr_spec) == (TRICKY, control.config()["ses"]["from_address"])
