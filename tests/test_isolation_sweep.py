"""Apps as tenants: a key of app A holding every scope (``admin``), or its OAuth token, can never
read, change or send to anything of app B, on every endpoint.

:data:`CALLS` is a table of (method, path, body) × app B's objects (its notification, delivery,
recipient, device, category, template and versions, its preference, tracking and unsubscribe
links, its analytics, its idempotency keys...), each called with A's key: each answers the
documented refusal (404 for an id or a name of B's; 400 ``unknown_template`` for the analytics'
filter; 400 ``batch_rejected``; 403 at the webhooks, or a call signed with A's own Twilio
account that changes nothing of B's; 400 ``invalid_token`` for a link whose payload was
swapped) or acts on A's own namespace only (a ``PUT`` of B's recipient's id makes A's own
recipient of that id), and no row of B changed: every row of every model that belongs to B,
found through its foreign keys to App (:func:`owned_by`; B's OAuth tokens included), is
compared before and after. A listing shows A's rows only.

Each call of the API is made twice: with A's API key, and with an access token of A's OAuth
client (``admin`` too); A's client secret gets no token for B's client, nor revokes B's token.

The table is exhaustive by construction: :func:`test_every_endpoint_has_its_rows` walks the URL
resolver (notify/urls.py, the API's and the webhooks' included) and fails, naming them, for a
route with a path variable (an id, a name, a token) or an API key without a row for each of its
methods, and for any other route without rows that is not listed in :data:`NO_TENANT_DATA` with
its reason; so a new endpoint fails here until it has its rows (as the provider credentials'
and the OAuth endpoints did). Likewise :func:`test_every_model_is_owned_by_an_app_or_global` for the models.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field
from typing import Callable

import pytest
from django.apps import apps as django_apps
from django.conf import settings
from django.core import signing
from django.db.models import ForeignKey, OneToOneRel, Sum
from django.urls import URLPattern, URLResolver, resolve
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework.views import APIView
from twilio.request_validator import RequestValidator

from devtools import demo
from sandbox.credentials import ensure_credentials, write_sandbox_files
from sandbox.ports import Ports
from notify import analytics, oauth, preferences, providers, scopes, tracking
from notify import unsubscribe as unsubscribe_module
from notify import urls as root_urls
from notify.models import App, AppAPIKey, Category, DailyStat, Delivery, Device, Recipient, Template

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/v1"
B_TEMPLATE = "b-secret"  # a name only B has
B_CATEGORY = "b-orders"
SHARED_KEY = "order-7-shipped"  # an idempotency key both apps use
DATA = {"name": "Ana", "order": "7"}
#: Each app's own provider settings (notify.credentials): A has its own Twilio account, whose
#: auth token signs the webhook calls A forges below; B has its own Twilio and SMTP settings.
A_TWILIO = {"account_sid": "AC" + "a" * 32, "auth_token": "a" * 32, "from_number": "+14155550100"}
B_TWILIO = {"account_sid": "AC" + "b" * 32, "auth_token": "b" * 32, "from_number": "+14155550199"}
B_SMTP = {"host": "smtp.b.example", "from_address": "b@b.example", "username": "b-smtp-user", "password": "b-secret-password"}
DEMO = demo.DEMO_TEMPLATE
CONTENT = {"en": {"sms": {"body": "B only: {{ name }}"}, "email": {"subject": "B", "text": "B {{ order }}"}}}


def client_for(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return client


def _ok(response, status: int = 200) -> dict:
    assert response.status_code == status, response.content
    return response.json() if response.content else {}


def _token(client, secret: str) -> str:
    """An access token of the OAuth client (``POST /oauth/token/``, client credentials)."""
    r = APIClient().post("/oauth/token/", {"grant_type": "client_credentials", "client_id": client.application.client_id,
                                           "client_secret": secret})
    return _ok(r)["access_token"]


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def _swapped(own: str, other: str) -> str:
    """``other``'s payload (and timestamp) under ``own``'s signature: what A can make of its own
    link to point it at B's object without the service's key."""
    return other.rsplit(":", 1)[0] + ":" + own.rsplit(":", 1)[1]


@pytest.fixture(scope="module")
def _sandbox_files():
    """The deployment's own provider settings (the sandbox's sandbox.json, as a started sandbox
    writes it), so that the webhooks' rows do not depend on an earlier module having started one."""
    creds = ensure_credentials(settings.NOTIFY_SANDBOX_DIR, Ports(int(os.environ["NOTIFY_TEST_SANDBOX_PORT_BASE"])))
    if not (creds.directory / "sandbox.json").exists():
        write_sandbox_files(creds)
    providers.reset()


@pytest.fixture
def world(_fresh_cache, _queues_declared, _sandbox_files):
    """App B with one of everything, made through its own API; app A with a recipient and a
    sent notification of its own, and A's admin-scoped client. Returns the names and ids the
    table's paths and bodies use (``b_*``: B's; ``a_*``: A's)."""
    app_b, key_b = demo.create_app("tenant-b")
    b = client_for(key_b)
    _ok(b.put(f"{API}/recipients/b-user", {"name": "Bea", "phone": "+4915123456789", "email": "bea@example.com",
                                           "locale": "en"}, format="json"), 201)
    b_device = _ok(b.post(f"{API}/recipients/b-user/devices", {"platform": "ios", "token": secrets.token_hex(32)},
                          format="json"), 201)
    _ok(b.put(f"{API}/recipients/b-user/preferences", {"preferences": [
        {"channel": "email", "category": B_CATEGORY, "enabled": True}]}, format="json"))
    _ok(b.put(f"{API}/categories/{B_CATEGORY}", {"label": "B's orders"}, format="json"), 201)
    _ok(b.post(f"{API}/templates", {"name": B_TEMPLATE, "category": B_CATEGORY, "default_locale": "en",
                                    "content": CONTENT, "publish": True}, format="json"), 201)
    _ok(b.post(f"{API}/templates/{B_TEMPLATE}/versions", {"content": CONTENT, "publish": False}, format="json"), 201)
    sent = _ok(b.post(f"{API}/notifications", {"recipient": "b-user", "template": B_TEMPLATE, "data": DATA,
                                               "channels": ["sms", "email"]},
                      format="json", HTTP_IDEMPOTENCY_KEY=SHARED_KEY), 202)
    batch = _ok(b.post(f"{API}/notifications/batch", {"notifications": [
        {"recipient": "b-user", "template": B_TEMPLATE, "data": DATA, "event_id": "b-batch-1"}]}, format="json"), 202)
    b_broadcast = _ok(b.post(f"{API}/broadcasts", {"template": B_TEMPLATE, "data": DATA, "segment": {"all": True}},
                             format="json"), 202)
    b_delivery = sent["deliveries"][0]["id"]
    b_email = next(d["id"] for d in sent["deliveries"] if d["channel"] == "email")
    Delivery.objects.filter(id__in=[b_delivery, b_email]).update(status="sent", sent_at=timezone.now())
    analytics.rollup(lag=0)  # B's analytics: its daily counts
    assert DailyStat.objects.filter(app=app_b).exists()

    # B's own provider settings (an admin key's), and A's own Twilio account (below).
    b_admin = client_for(AppAPIKey.objects.create_key(name="b admin", app=app_b, scopes=[scopes.ADMIN])[1])
    _ok(b_admin.put(f"{API}/credentials/twilio", {"values": B_TWILIO}, format="json"), 201)
    _ok(b_admin.put(f"{API}/credentials/smtp", {"values": B_SMTP}, format="json"), 201)
    # B's demo template gets a version 2; A's, of the same name, keeps its one version.
    _ok(b.post(f"{API}/templates/order-shipped/versions", {"content": {"ko": DEMO}, "publish": True},
               format="json"), 201)
    app_a, _ = demo.create_app("tenant-a")
    a_key_row, key_a = AppAPIKey.objects.create_key(name="a admin", app=app_a, scopes=[scopes.ADMIN])
    a = client_for(key_a)
    _ok(a.put(f"{API}/credentials/twilio", {"values": A_TWILIO}, format="json"), 201)
    _ok(a.put(f"{API}/recipients/a-user", {"phone": "+4915123456780", "email": "a@example.com"}, format="json"), 201)
    a_sent = _ok(a.post(f"{API}/notifications", {"recipient": "a-user", "channels": ["email"], "content": {
        "email": {"subject": "A", "text": "A"}}}, format="json"), 202)
    a_delivery = a_sent["deliveries"][0]["id"]
    Delivery.objects.filter(id=a_delivery).update(status="sent", sent_at=timezone.now())

    b_recipient = Recipient.objects.get(app=app_b, external_id="b-user")
    a_recipient = Recipient.objects.get(app=app_a, external_id="a-user")
    unsub = lambda delivery: signing.dumps(str(delivery), salt=unsubscribe_module._SALT, compress=True)  # noqa: E731
    token = lambda url: url.rsplit("/", 1)[1].removesuffix(".gif")  # noqa: E731
    a_pref = preferences.make_token(app_a.id, a_recipient.id)
    return {
        "app_a": app_a, "app_b": app_b, "a": a, "key_a": key_a, "b": b,
        "a_user": "a-user", "a_delivery": a_delivery,
        "b_user": "b-user", "b_recipient_pk": b_recipient.pk, "b_device": b_device["id"],
        "b_device_token": b_device["token"], "b_notification": sent["id"], "b_batch_notification":
            batch["notifications"][0]["id"], "b_delivery": b_delivery, "b_email_delivery": b_email,
        "b_template": B_TEMPLATE, "b_category": B_CATEGORY, "b_broadcast": b_broadcast["id"],
        # Links of A's own delivery and recipient, their payload swapped for B's (see _swapped);
        # and a preference token naming A's app with B's recipient (signed with the service's
        # key: the page must still check that the recipient is the app's).
        "t_open": _swapped(token(tracking.open_url(a_delivery)), token(tracking.open_url(b_email))),
        "t_click": _swapped(token(tracking.click_url(a_delivery, "https://a.example/")),
                            token(tracking.click_url(b_email, "https://b.example/"))),
        "t_push": _swapped(token(tracking.push_open_url(a_delivery)), token(tracking.push_open_url(b_delivery))),
        "t_unsub": _swapped(unsub(a_delivery), unsub(b_email)),
        "t_pref": _swapped(a_pref, preferences.make_token(app_b.id, b_recipient.id)),
        "t_pref_cross": preferences.make_token(app_a.id, b_recipient.id),
        "a_app_id": app_a.id, "b_app_id": app_b.id, "a_pref": a_pref, "now": timezone.now().isoformat().replace("+00:00", "Z"),
    }


@pytest.fixture
def oauth_world(world) -> dict:
    """The world with each app's OAuth client (admin) and a token of each (its own fixture:
    a client's secret is hashed as a password, slow on purpose, so only the calls that need
    them make them)."""
    a_client, a_secret = oauth.create_client(world["app_a"], [scopes.ADMIN])
    b_client, b_secret = oauth.create_client(world["app_b"], [scopes.ADMIN])
    world.update(a_token=_token(a_client, a_secret), b_token=_token(b_client, b_secret),
                 a_client_id=a_client.application.client_id, a_client_secret=a_secret,
                 b_client_id=b_client.application.client_id)
    return world


# --- what belongs to an app ----------------------------------------------------------------------

#: Models of no app: what the analytics' rollup has counted up to, for every app at once. (The
#: outbox's batch rows belong to an app through their broadcast.)
GLOBAL_MODELS = {"AnalyticsWatermark"}


def app_lookup(model) -> str | None:
    """The ORM lookup from ``model`` to its App's id (``app``, ``recipient__app``,
    ``delivery__notification__app``, ``application__notify_client__app`` for an OAuth token
    ...), by the shortest chain of foreign keys and one-to-one relations (either way); None when
    none leads there."""
    if model is App:
        return "pk"
    paths, seen = [(model, "")], {model}
    while paths:
        current, prefix = paths.pop(0)
        for f in current._meta.get_fields():
            if not (isinstance(f, ForeignKey) or isinstance(f, OneToOneRel)):
                continue
            name = f.name if isinstance(f, ForeignKey) else f.get_accessor_name()
            if f.related_model is App:
                return f"{prefix}{name}"
            if f.related_model not in seen:
                seen.add(f.related_model)
                paths.append((f.related_model, f"{prefix}{name}__"))
    return None


def owned_by(app: App) -> dict[str, list[dict]]:
    """Every row of every model (the project's and its libraries', e.g. django-oauth-toolkit's
    tokens) that belongs to ``app``, every field."""
    rows = {}
    for model in django_apps.get_models():
        lookup = app_lookup(model)
        if lookup is not None:
            rows[model._meta.label] = list(model.objects.filter(**{lookup: app.pk}).order_by("pk").values())
    return rows


def test_every_model_is_owned_by_an_app_or_global():
    """A new model is compared in every call of the table below, or declared global here."""
    orphans = {m.__name__ for m in django_apps.get_app_config("notify").get_models() if app_lookup(m) is None}
    assert orphans == GLOBAL_MODELS, f"no foreign key chain to App (add it to GLOBAL_MODELS if no app's): {orphans}"


# --- the table -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Call:
    """One call with A's admin key. ``path`` and string values of ``body`` take ``{names}`` of
    the world; ``status`` the answer; ``code`` its ``error.code``; ``check(world, response)``
    anything more (what A got is A's own)."""

    method: str
    path: str
    body: dict | None = None
    status: int | tuple[int, ...] = 404
    code: str | None = None
    check: Callable | None = None
    headers: dict = field(default_factory=dict)
    form: bool = False  # the body as a form (webhooks), not JSON
    signed: bool = False  # X-Twilio-Signature made with A's own auth token (A_TWILIO)

    @property
    def id(self) -> str:
        return f"{self.method.upper()} {self.path}" + (f" {_short(self.body)}" if self.body else "")


def _short(body) -> str:
    text = re.sub(r"\s+", "", str(body))
    return text[:60]


def _send(recipient="{b_user}", template="order-shipped", **extra) -> dict:
    return {"recipient": recipient, "template": template, "data": DATA, **extra}


def _fill(value, w):
    if isinstance(value, str):
        return value.format(**w)
    if isinstance(value, dict):
        return {k: _fill(v, w) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, w) for v in value]
    return value


# Checks of the calls that act in A's own namespace.

def _new_notification_of_a(w, r):
    body = r.json()
    ids = [body["id"]] if "id" in body else [n["id"] for n in body["notifications"]]
    assert w["b_notification"] not in ids and w["b_batch_notification"] not in ids
    assert r.get("Idempotent-Replayed") is None


def _bulk_of_a(w, r):
    accepted = r.json()["accepted"]
    assert len(accepted) == 1 and not accepted[0]["replayed"], accepted
    assert accepted[0]["id"] not in (w["b_notification"], w["b_batch_notification"])


def _recipient_of_a(w, r):
    assert r.json()["external_id"] == w["b_user"] and r.json()["phone"] == ""  # not B's
    assert Recipient.objects.filter(external_id=w["b_user"], app=w["app_a"]).exists()


def _device_of_a(w, r):
    device = Device.objects.get(id=r.json()["id"])
    assert device.app_id == w["app_a"].id and device.id != w["b_device"]


def _category_of_a(w, r):
    assert Category.objects.get(app=w["app_a"], name=w["b_category"]).label == "A's"


def _template_of_a(w, r):
    assert Template.objects.get(app=w["app_a"], name=w["b_template"]).category == "a-category"


def _own_demo_template(w, r):
    assert r.json()["name"] == "order-shipped" and r.json()["latest_version"] == 1  # B's has 2


def _no_b_rows(field_name):
    def check(w, r):
        names = {row[field_name] for row in r.json()}
        assert w["b_template"] not in names and w["b_category"] not in names, names
    return check


def _only_a_counts(w, r):
    body = r.json()
    assert all(row.get("template") != w["b_template"] for row in body["rows"])
    def sums(app):
        rows = DailyStat.objects.filter(app=app).values("metric").annotate(n=Sum("count"))
        return {**dict.fromkeys(analytics.METRICS, 0), **{row["metric"]: row["n"] for row in rows}}

    assert sums(w["app_b"])["accepted"] > 0
    assert body["totals"]["counts"] == sums(w["app_a"])


def _batch_items(*codes):
    def check(w, r):
        items = r.json()["error"]["items"]
        assert [items[str(i)]["code"] for i in range(len(codes))] == list(codes), items
    return check


def _only_a_credentials(w, r):
    rows = r.json() if isinstance(r.json(), list) else [r.json()]
    assert [row["provider"] for row in rows] == ["twilio"], rows
    assert rows[0]["values"]["account_sid"] == A_TWILIO["account_sid"]
    assert not any(value in r.content.decode() for value in (*B_TWILIO.values(), *B_SMTP.values()))


def _smtp_of_a(w, r):
    assert r.json()["values"] == {"host": "smtp.a.example", "from_address": "a@a.example"}


def _invalid_client(w, r):
    assert r.json()["error"] == "invalid_client", r.content


def _a_token_is_a_tokens(w, r):
    a = bearer(r.json()["access_token"])
    assert a.get(f"{API}/recipients/{w['b_user']}").status_code == 404
    assert a.get(f"{API}/recipients/{w['a_user']}").status_code == 200


def _b_token_still_works(w, r):
    assert bearer(w["b_token"]).get(f"{API}/recipients/{w['b_user']}").status_code == 200


def _admin_login(w, r):
    assert "/admin/login/" in r["Location"]


CALLS = [
    # notifications: send to B's recipient, with B's template, with B's idempotency key
    Call("post", "/api/v1/notifications", _send(), code="recipient_not_found"),
    Call("post", "/api/v1/notifications", _send("{a_user}", "{b_template}"), code="template_not_found"),
    Call("post", "/api/v1/notifications", {"recipient": "{a_user}", "channels": ["email"], "content": {
        "email": {"subject": "A", "text": "A"}}}, status=202, check=_new_notification_of_a,
         headers={"HTTP_IDEMPOTENCY_KEY": SHARED_KEY}),
    Call("post", "/api/v1/notifications/batch", {"notifications": [_send(), _send("{a_user}", "{b_template}")]},
         status=400, code="batch_rejected", check=_batch_items("recipient_not_found", "template_not_found")),
    Call("post", "/api/v1/notifications/batch", {"notifications": [
        {"recipient": "{a_user}", "channels": ["email"], "content": {"email": {"subject": "A", "text": "A"}},
         "event_id": "b-batch-1"}]}, status=202, check=_new_notification_of_a),
    # bulk: B's recipients and B's template are unknown; a key B used is a fresh one for A
    Call("post", "/api/v1/notifications/bulk", {"template": "order-shipped", "recipients": [
        {"recipient": "{b_user}", "data": DATA}, {"recipient": "{a_user}", "data": DATA}]},
         status=400, code="bulk_rejected", check=_batch_items("recipient_not_found")),
    Call("post", "/api/v1/notifications/bulk", {"template": "{b_template}", "recipients": [
        {"recipient": "{a_user}", "data": DATA}]}, code="template_not_found"),
    Call("post", "/api/v1/notifications/bulk", {"template": "order-shipped", "recipients": [
        {"recipient": "{a_user}", "data": DATA, "event_id": "b-batch-1"}]}, status=202, check=_bulk_of_a),
    Call("get", "/api/v1/notifications/{b_notification}"),
    Call("delete", "/api/v1/notifications/{b_notification}"),
    Call("delete", "/api/v1/notifications/{b_batch_notification}"),
    Call("post", "/api/v1/deliveries/{b_delivery}/opened"),
    # recipients
    Call("get", "/api/v1/recipients/{b_user}"),
    Call("put", "/api/v1/recipients/{b_user}", {"name": "taken over"}, status=201, check=_recipient_of_a),
    Call("post", "/api/v1/recipients/{b_user}/erase"),
    Call("get", "/api/v1/recipients/{b_user}/devices"),
    Call("post", "/api/v1/recipients/{b_user}/devices", {"platform": "ios", "token": "ab" * 32}),
    Call("post", "/api/v1/recipients/{a_user}/devices", {"platform": "ios", "token": "{b_device_token}"},
         status=201, check=_device_of_a),
    Call("delete", "/api/v1/recipients/{b_user}/devices/{b_device}"),
    Call("delete", "/api/v1/recipients/{a_user}/devices/{b_device}"),
    Call("get", "/api/v1/recipients/{b_user}/preferences"),
    Call("put", "/api/v1/recipients/{b_user}/preferences", {"preferences": [
        {"channel": "sms", "category": "", "enabled": False}]}),
    Call("get", "/api/v1/recipients/{b_user}/preference-link"),
    # broadcasts: B's is unknown; B's template and recipients are no segment of A's
    Call("get", "/api/v1/broadcasts", status=200, check=lambda w, r: r.json() == [] or pytest.fail(r.json())),
    Call("get", "/api/v1/broadcasts/{b_broadcast}"),
    Call("post", "/api/v1/broadcasts/{b_broadcast}/cancel"),
    Call("post", "/api/v1/broadcasts", {"template": "{b_template}", "data": DATA, "segment": {"all": True}},
         code="template_not_found"),
    Call("post", "/api/v1/broadcasts", {"template": "order-shipped", "data": DATA,
                                        "segment": {"external_ids": ["{b_user}"]}}, status=422, code="empty_segment"),
    # categories
    Call("get", "/api/v1/categories", status=200, check=_no_b_rows("name")),
    Call("get", "/api/v1/categories/{b_category}", code="category_not_found"),
    Call("put", "/api/v1/categories/{b_category}", {"label": "A's"}, status=201, check=_category_of_a),
    Call("delete", "/api/v1/categories/{b_category}", code="category_not_found"),
    # templates
    Call("get", "/api/v1/templates?archived=true", status=200, check=_no_b_rows("name")),
    Call("post", "/api/v1/templates", {"name": "{b_template}", "category": "a-category", "default_locale": "en",
                                       "content": CONTENT, "publish": True}, status=201, check=_template_of_a),
    Call("get", "/api/v1/templates/{b_template}", code="template_not_found"),
    Call("get", "/api/v1/templates/order-shipped", status=200, check=_own_demo_template),
    Call("patch", "/api/v1/templates/{b_template}", {"category": "stolen"}, code="template_not_found"),
    Call("delete", "/api/v1/templates/{b_template}", code="template_not_found"),
    Call("get", "/api/v1/templates/{b_template}/versions", code="template_not_found"),
    Call("post", "/api/v1/templates/{b_template}/versions", {"content": CONTENT, "publish": True},
         code="template_not_found"),
    Call("get", "/api/v1/templates/{b_template}/versions/1", code="template_not_found"),
    Call("post", "/api/v1/templates/{b_template}/versions/2/publish", code="template_not_found"),
    Call("post", "/api/v1/templates/{b_template}/preview", {"data": DATA}, code="template_not_found"),
    Call("post", "/api/v1/templates/order-shipped/preview", {"data": DATA, "recipient": "{b_user}"},
         code="recipient_not_found"),
    # analytics: B's template is no filter of A's; A's totals are A's own
    Call("get", "/api/v1/analytics?template={b_template}", status=400, code="invalid_request",
         check=lambda w, r: r.json()["error"]["reasons"] == {"template": ["unknown_template"]} or pytest.fail(r)),
    Call("get", "/api/v1/analytics?group_by=template,channel", status=200, check=_only_a_counts),
    # provider credentials: B's are never A's to see, change or drop
    Call("get", "/api/v1/credentials", status=200, check=_only_a_credentials),
    Call("get", "/api/v1/credentials/twilio", status=200, check=_only_a_credentials),
    Call("get", "/api/v1/credentials/smtp", code="no_credentials"),
    Call("put", "/api/v1/credentials/smtp", {"values": {"host": "smtp.a.example", "from_address": "a@a.example"}},
         status=201, check=_smtp_of_a),
    Call("delete", "/api/v1/credentials/smtp", code="no_credentials"),
    # OAuth2: A's client secret gets no token of B's client; A's token is A's; A cannot revoke B's
    Call("post", "/oauth/token/", {"grant_type": "client_credentials", "client_id": "{b_client_id}",
                                   "client_secret": "{a_client_secret}"}, status=401, check=_invalid_client, form=True),
    Call("post", "/oauth/token/", {"grant_type": "client_credentials", "client_id": "{a_client_id}",
                                   "client_secret": "{a_client_secret}"}, status=200, check=_a_token_is_a_tokens,
         form=True),
    Call("post", "/oauth/revoke_token/", {"token": "{b_token}", "client_id": "{a_client_id}",
                                          "client_secret": "{a_client_secret}"}, status=200,
         check=_b_token_still_works, form=True),
    # the public links: A's own, its payload swapped for B's delivery or recipient
    Call("get", "/preferences/{t_pref}", status=400),
    Call("post", "/preferences/{t_pref}", {"ch:sms": "on"}, status=400, form=True),
    Call("get", "/preferences/{t_pref_cross}"),
    Call("post", "/preferences/{t_pref_cross}", {"muted": "on", "pause": "on"}, form=True),
    Call("post", "/unsubscribe/{t_unsub}", {"List-Unsubscribe": "One-Click"}, status=400, code="invalid_token",
         form=True),
    Call("get", "/t/o/{t_open}.gif", status=400, code="invalid_token"),
    Call("get", "/t/c/{t_click}", status=400, code="invalid_token"),
    Call("post", "/t/p/{t_push}", status=400, code="invalid_token"),
    # webhooks: an app's key is no signature; B's delivery and B's phone are named in vain
    Call("post", "/webhooks/twilio/status?delivery_id={b_delivery}", {
        "MessageSid": "SM" + "0" * 32, "MessageStatus": "undelivered", "ErrorCode": "21610"},
         status=403, form=True),
    Call("post", "/webhooks/twilio/inbound", {"From": "+4915123456789", "Body": "STOP"}, status=403,
         form=True),
    # ... nor is A's own Twilio account's signature, on a call naming A's app (as A's own
    # messages' callbacks do) and B's delivery or B's recipient's phone
    Call("post", "/webhooks/twilio/status?app={a_app_id}&delivery_id={b_delivery}", {
        "MessageSid": "SM" + "1" * 32, "MessageStatus": "undelivered", "ErrorCode": "21610"},
         status=(204, 403), form=True, signed=True),
    Call("post", "/webhooks/twilio/status?app={b_app_id}&delivery_id={b_delivery}", {
        "MessageSid": "SM" + "2" * 32, "MessageStatus": "undelivered", "ErrorCode": "21610"},
         status=(403,), form=True, signed=True),
    Call("post", "/webhooks/twilio/inbound?app={a_app_id}", {"From": "+4915123456789", "Body": "STOP"},
         status=(204, 403), form=True, signed=True),
    Call("post", "/webhooks/ses/events", {
        "Type": "Notification", "MessageId": "m-1", "TopicArn": "arn:aws:sns:eu-west-1:123456789012:b-events",
        "Timestamp": "{now}", "SignatureVersion": "2", "Signature": "AAAA",
        "SigningCertURL": "https://a.example/cert.pem",  # A's own certificate: not an SNS host
        "Message": '{{"eventType": "Bounce", "mail": {{"messageId": "x", "tags": {{"delivery_id": ["{b_email_delivery}"]}}}}, '
                   '"bounce": {{"bounceType": "Permanent", "bouncedRecipients": [{{"emailAddress": "bea@example.com"}}]}}}}'},
         status=403),
    # the admin is for staff sessions: an API key opens nothing there
    Call("get", "/admin/notify/recipient/{b_recipient_pk}/change/", status=302, check=_admin_login),
]


#: Each call of the API with A's admin-scoped API key, then with an access token of A's
#: admin-scoped OAuth client; the others (links, webhooks, OAuth, admin) take neither.
SWEEP = [pytest.param(call, credential, id=f"{credential}: {call.id}") for call in CALLS
         for credential in (("api_key", "oauth_token") if call.path.startswith(API) else ("api_key",))]


@pytest.mark.parametrize("call,credential", SWEEP)
def test_a_key_of_app_a_with_every_scope_touches_nothing_of_app_b(request, world, call, credential):
    if credential == "oauth_token" or call.path.startswith("/oauth/"):
        request.getfixturevalue("oauth_world")
    before = owned_by(world["app_b"])
    client = client_for(world["key_a"]) if credential == "api_key" else bearer(world["a_token"])
    path, body = _fill(call.path, world), _fill(call.body, world)
    kwargs = dict(call.headers)
    if call.signed:
        url = settings.NOTIFY_PUBLIC_URL.rstrip("/") + path
        kwargs["HTTP_X_TWILIO_SIGNATURE"] = RequestValidator(A_TWILIO["auth_token"]).compute_signature(url, body)
    if body is not None:
        kwargs.update(data=body) if call.form else kwargs.update(data=body, format="json")
    r = getattr(client, call.method)(path, **kwargs)
    expected = call.status if isinstance(call.status, tuple) else (call.status,)
    if path.startswith("/webhooks/") and not providers.in_use(path.split("/")[2].split("?")[0]):
        expected = (404,)
    assert r.status_code in expected, (r.status_code, r.content[:500])
    if call.code is not None:
        assert r.json()["error"]["code"] == call.code, r.content
    if call.check is not None:
        call.check(world, r)
    assert owned_by(world["app_b"]) == before, "a row of app B changed"


def test_b_can_still_use_everything_a_probed(world):
    """The fixture's objects are B's to use (so the refusals above are A's, not missing data)."""
    b, w = world["b"], world
    assert b.get(f"{API}/notifications/{w['b_notification']}").status_code == 200
    assert b.get(f"{API}/recipients/b-user/preference-link").status_code == 200
    assert b.post(f"{API}/templates/{B_TEMPLATE}/preview", {"data": DATA}, format="json").status_code == 200
    assert b.get(f"{API}/analytics", {"template": B_TEMPLATE}).status_code == 200
    assert b.get(f"{API}/categories/{B_CATEGORY}").status_code == 200
    assert b.get(f"{API}/templates/{B_TEMPLATE}/versions/2").status_code == 200
    assert b.post(f"{API}/deliveries/{w['b_delivery']}/opened").status_code == 200
    # A's own links work for A's own objects (the swapped ones above failed on the swap alone).
    assert APIClient().get(f"/preferences/{w['a_pref']}").status_code == 200
    assert APIClient().get(f"/t/o/{tracking.open_url(w['a_delivery']).rsplit('/', 1)[1]}").status_code == 200


# --- exhaustive by construction -------------------------------------------------------------------

#: Routes that hold no data of any app, or are for the operators: none takes an app's id, name
#: or token, and none admits an app's API key.
NO_TENANT_DATA = {
    "health/live": "liveness", "health/ready": "readiness", "healthz": "liveness", "readyz": "readiness",
    "metrics": "Prometheus' scrape: per channel, no app's data; refused unless NOTIFY_METRICS_ALLOWED",
    "ops/dashboard": "staff session only", "ops/dashboard/data": "staff session only",
    "api/v1/": "the API root: links", "api/v1/schema": "the OpenAPI schema", "api/v1/docs": "Swagger UI",
    "api/v1/redoc": "ReDoc",
}
_METHODS = ("get", "post", "put", "patch", "delete")


def routes():
    """(route, view class or None, methods or None) of every URL pattern of notify/urls.py, the
    admin (a resolver of its own) as the one route ``admin/``. ``methods``: the HTTP methods a
    class-based view implements; None for a function view (any)."""
    def walk(patterns, prefix):
        for entry in patterns:
            route = prefix + str(entry.pattern)
            if isinstance(entry, URLResolver):
                if route == "admin/":
                    yield route, None, None
                else:
                    yield from walk(entry.url_patterns, route)
            elif isinstance(entry, URLPattern):
                cls = getattr(entry.callback, "cls", None) or getattr(entry.callback, "view_class", None)
                methods = {m for m in _METHODS if cls is not None and hasattr(cls, m)} or None
                yield route, cls, methods
    yield from walk(root_urls.urlpatterns, "")


def _route_of(path: str) -> str:
    path = path.split("?", 1)[0]
    if path.startswith("/admin/"):
        return "admin/"
    return resolve(path).route


def test_every_endpoint_has_its_rows():
    """Each route with a path variable or taking an API key has a row per method it implements
    (function views: at least one); the others have rows (the OAuth endpoints) or are in
    NO_TENANT_DATA with their reason. A new endpoint fails here, named, until it has its rows."""
    sample = {"b_notification": "0d6c5c5e-4f0e-4d3b-9a51-2f3c9f1b7a10", "b_batch_notification":
              "0d6c5c5e-4f0e-4d3b-9a51-2f3c9f1b7a12", "b_delivery": "0d6c5c5e-4f0e-4d3b-9a51-2f3c9f1b7a11",
              "b_device": 1, "b_recipient_pk": 1, "b_broadcast": 1}
    covered: dict[str, set[str]] = {}
    for call in CALLS:
        path = re.sub(r"\{(\w+)\}", lambda m: str(sample.get(m.group(1), "x")), call.path)
        covered.setdefault(_route_of(path), set()).add(call.method)
    missing = []
    for route, cls, methods in routes():
        keyed = cls is not None and issubclass(cls, APIView) and cls.permission_classes != []
        if "<" in route or keyed or route == "admin/":
            needed = methods or {"any"}
            done = covered.get(route, set())
            lacking = sorted(needed - done) if methods else ([] if done else ["any"])
            missing += [f"{m.upper()} {route}" for m in lacking]
        elif route not in NO_TENANT_DATA and route not in covered:
            missing.append(f"{route} (no path variable, no API key: add rows, or a reason in NO_TENANT_DATA)")
    assert not missing, f"endpoints without a cross-app row in CALLS: {missing}"
    stale = set(NO_TENANT_DATA) - {route for route, _, _ in routes()}
    assert not stale, f"NO_TENANT_DATA names routes that are gone: {stale}"
