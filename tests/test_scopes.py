"""API keys' scopes (notify.scopes, notify.api.permissions): every endpoint admits a key holding
its scope (or ``admin``) and refuses one without it with 403 ``missing_scope`` naming the scope,
nothing written; every view of the API declares its scope or is public; a revocation, an expiry
or a scope change applies from the key's very next request (the cached key row is dropped by
save and by QuerySet.update alike); keys' scopes are edited in the admin, the key shown once."""

from __future__ import annotations

import importlib
import json
import re
import secrets
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.urls import URLPattern, URLResolver, resolve
from django.utils import timezone
from rest_framework.test import APIClient

from notify import scopes
from notify.api import urls as api_urls
from notify.api.permissions import HasRequiredScope, MissingScope
from notify.cache import api_key_key
from notify import credentials
from notify.models import (AppAPIKey, Broadcast, Category, Delivery, DeliveryEvent, DeliveryLog, Device, Notification,
                           Preference, ProviderCredential, Recipient, Template, TemplateVersion)

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/v1"
USER = "scope-user"
SEND_BODY = {"recipient": USER, "template": "order-shipped", "data": {"name": "Ana", "order": "7"}}
TEMPLATE_CONTENT = {"en": {"sms": {"body": "Hi {{ name }}"}}}

#: (method, path, body, scope it needs, status with that scope). The path's {fields} come from
#: the ``world`` fixture. Every operation of notify/api/urls.py but the public ones.
CALLS = [
    ("post", "/notifications", SEND_BODY, "send", 202),
    ("post", "/notifications/batch", {"notifications": [SEND_BODY]}, "send", 202),
    ("post", "/notifications/bulk", {"template": "order-shipped", "recipients": [
        {"recipient": USER, "data": {"name": "Ana", "order": "7"}}]}, "send", 202),
    ("get", "/notifications/{notification}", None, "send", 200),
    ("delete", "/notifications/{notification}", None, "send", 200),
    ("post", "/deliveries/{delivery}/opened", None, "send", 200),
    ("post", "/broadcasts", {"template": "order-shipped", "data": {"name": "Ana", "order": "7"},
                             "segment": {"all": True}}, "send", 202),
    ("get", "/broadcasts", None, "send", 200),
    ("get", "/broadcasts/{broadcast}", None, "send", 200),
    ("post", "/broadcasts/{broadcast}/cancel", None, "send", 200),
    ("get", "/recipients/{user}", None, "recipients", 200),
    ("put", "/recipients/someone-new", {"name": "New"}, "recipients", 201),
    ("post", "/recipients/{user}/erase", None, "recipients", 200),
    ("get", "/recipients/{user}/devices", None, "recipients", 200),
    ("post", "/recipients/{user}/devices", {"platform": "ios", "token": "ab" * 32}, "recipients", 201),
    ("delete", "/recipients/{user}/devices/{device}", None, "recipients", 204),
    ("get", "/recipients/{user}/preferences", None, "recipients", 200),
    ("put", "/recipients/{user}/preferences", {"preferences": [{"channel": "sms", "enabled": False}]},
     "recipients", 200),
    ("get", "/recipients/{user}/preference-link", None, "recipients", 200),
    ("get", "/categories", None, "templates", 200),
    ("get", "/categories/orders", None, "templates", 200),
    ("put", "/categories/promo", {"label": "Promotions"}, "templates", 201),
    ("delete", "/categories/orders", None, "templates", 204),
    ("get", "/templates", None, "templates", 200),
    ("post", "/templates", {"name": "welcome", "category": "orders", "default_locale": "en",
                            "content": TEMPLATE_CONTENT, "publish": True}, "templates", 201),
    ("get", "/templates/order-shipped", None, "templates", 200),
    ("patch", "/templates/order-shipped", {"category": "shipping"}, "templates", 200),
    ("delete", "/templates/order-shipped", None, "templates", 204),
    ("get", "/templates/order-shipped/versions", None, "templates", 200),
    ("post", "/templates/order-shipped/versions", {"content": {"ko": TEMPLATE_CONTENT["en"]}, "publish": False},
     "templates", 201),
    ("get", "/templates/order-shipped/versions/1", None, "templates", 200),
    ("post", "/templates/order-shipped/versions/1/publish", None, "templates", 200),
    ("post", "/templates/order-shipped/preview", {"data": {"name": "Ana", "order": "7"}}, "templates", 200),
    ("get", "/analytics", None, "analytics", 200),
    ("get", "/analytics?format=csv", None, "analytics", 200),
    ("get", "/credentials", None, "admin", 200),
    ("get", "/credentials/twilio", None, "admin", 200),
    ("put", "/credentials/twilio", {"values": {"account_sid": "AC" + "1" * 32, "auth_token": "2" * 32,
                                               "from_number": "+15005550006"}}, "admin", 200),
    ("delete", "/credentials/twilio", None, "admin", 204),
]
IDS = [f"{method.upper()} {path}" for method, path, *_ in CALLS]

#: What a refused call must leave as it was: every row of these tables, every field.
WATCHED = (Notification, Delivery, DeliveryEvent, DeliveryLog, Recipient, Device, Preference, Category, Template,
           TemplateVersion, ProviderCredential, Broadcast)


def snapshot() -> dict:
    return {model.__name__: list(model.objects.order_by("pk").values()) for model in WATCHED}


def client_for(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return client


def new_key(app, key_scopes) -> tuple[AppAPIKey, APIClient]:
    row, key = AppAPIKey.objects.create_key(name="scoped", app=app, scopes=list(key_scopes))
    return row, client_for(key)


@pytest.fixture
def world(api, app_key):
    """A recipient with a phone and an iPhone, the category ``orders``, a sent notification (one
    delivery reached its provider, the others wait in the outbox): the ids the calls use."""
    r = api.put(f"{API}/recipients/{USER}", {"phone": "+4915123456789"}, format="json")
    assert r.status_code == 201, r.content
    r = api.post(f"{API}/recipients/{USER}/devices", {"platform": "ios", "token": secrets.token_hex(32)},
                 format="json")
    assert r.status_code == 201, r.content
    device = r.json()["id"]
    assert api.put(f"{API}/categories/orders", {"label": "Orders"}, format="json").status_code == 201
    r = api.post(f"{API}/notifications", SEND_BODY, format="json")
    assert r.status_code == 202, r.content
    notification = r.json()["id"]
    delivery = r.json()["deliveries"][0]["id"]
    Delivery.objects.filter(id=delivery).update(status="sent", sent_at=timezone.now())
    credentials.save(app_key[0].id, "twilio", {"from_number": "+15005550006"})  # its own SMS sender
    r = api.post(f"{API}/broadcasts", {"template": "order-shipped", "data": {"name": "Ana", "order": "7"},
                                       "segment": {"all": True}}, format="json")
    assert r.status_code == 202, r.content
    return {"app": app_key[0], "user": USER, "device": device, "notification": notification, "delivery": delivery,
            "broadcast": r.json()["id"]}


def call(client, world, method, path, body):
    url = API + path.format(**world)
    return getattr(client, method)(url, body, format="json") if body is not None else getattr(client, method)(url)


# --- each endpoint: admitted with its scope, refused without it -----------------------------------

@pytest.mark.parametrize("method,path,body,scope,ok", CALLS, ids=IDS)
def test_a_key_without_the_scope_gets_403_missing_scope_and_nothing_is_written(world, method, path, body, scope,
                                                                              ok):
    _, client = new_key(world["app"], [s for s in scopes.SCOPES if s not in (scope, scopes.ADMIN)])
    before = snapshot()
    r = call(client, world, method, path, body)
    assert r.status_code == 403, r.content
    assert r["Content-Type"] == "application/json"  # the CSV request too
    error = r.json()["error"]
    assert error["code"] == "missing_scope" and error["scope"] == scope, error
    assert scope in error["message"]
    assert snapshot() == before


@pytest.mark.parametrize("method,path,body,scope,ok", CALLS, ids=IDS)
def test_a_key_with_only_that_scope_is_admitted(world, method, path, body, scope, ok):
    _, client = new_key(world["app"], [scope])
    r = call(client, world, method, path, body)
    assert r.status_code == ok, r.content


@pytest.mark.parametrize("method,path,body,scope,ok", CALLS, ids=IDS)
def test_the_admin_scope_admits_every_endpoint(world, method, path, body, scope, ok):
    _, client = new_key(world["app"], [scopes.ADMIN])
    r = call(client, world, method, path, body)
    assert r.status_code == ok, r.content


def test_a_key_without_scopes_is_refused_everywhere_but_the_public_pages(world):
    _, client = new_key(world["app"], [])
    assert call(client, world, "get", "/recipients/{user}", None).json()["error"]["scope"] == "recipients"
    assert call(client, world, "get", "/analytics", None).status_code == 403
    for public in ("/", "/schema"):
        assert client.get(API + public).status_code == 200


def test_every_view_of_the_api_declares_its_scope_or_is_public():
    """No view can be forgotten: each one of notify/api/urls.py names a known scope (and is
    checked by HasRequiredScope), or is explicitly public (no authentication, no permission)."""
    def patterns(entries):
        for entry in entries:
            if isinstance(entry, URLResolver):
                yield from patterns(entry.url_patterns)
            elif isinstance(entry, URLPattern):
                yield entry

    public, scoped, undeclared = [], {}, []
    for pattern in patterns(api_urls.urlpatterns):
        view = getattr(pattern.callback, "cls", None) or getattr(pattern.callback, "view_class", None)
        assert view is not None, f"{pattern.pattern}: not a class-based DRF view"
        if view.permission_classes == [] and view.authentication_classes == []:
            public.append(pattern.name)
        elif getattr(view, "required_scope", None) in scopes.SCOPES and HasRequiredScope in view.permission_classes:
            scoped[pattern.name] = view.required_scope
        else:
            undeclared.append(f"{pattern.pattern} ({view.__name__})")
    assert not undeclared, f"views without required_scope (notify.scopes) or not checked: {undeclared}"
    assert set(public) == {"api-root", "schema", "docs", "redoc"}
    assert scoped["notifications"] == "send" and scoped["recipient"] == "recipients"
    assert scoped["templates"] == "templates" and scoped["analytics"] == "analytics"


def test_the_table_calls_every_scoped_route_with_its_scope():
    """CALLS is complete: each scoped route of notify/api/urls.py is called there, with the
    scope its view declares. A new endpoint fails here until it has its row."""
    sample = {"notification": "0d6c5c5e-4f0e-4d3b-9a51-2f3c9f1b7a10", "delivery": "0d6c5c5e-4f0e-4d3b-9a51-2f3c9f1b7a11",
              "user": "u", "device": 1, "broadcast": 1}
    called = {}
    for _, path, _, scope, _ in CALLS:
        match = resolve(API + "/" + re.sub(r"\?.*", "", path.format(**sample)).lstrip("/"))
        called.setdefault(match.url_name, set()).add(scope)
        assert getattr(match.func.cls, "required_scope", None) == scope, path
    routes = {p.name for p in api_urls.urlpatterns if isinstance(p, URLPattern)
              and getattr(p.callback.cls, "permission_classes", None) != []}
    assert set(called) == routes, f"add a row to CALLS for: {sorted(routes - set(called))}"


def test_a_view_that_names_no_scope_needs_admin():
    """Fail closed: a view added without ``required_scope`` is for ``admin`` keys only."""
    class Undeclared:
        pass

    class Request:
        def __init__(self, held):
            self.user = type("Principal", (), {"is_authenticated": True, "scopes": frozenset(held)})()

    check = HasRequiredScope()
    with pytest.raises(MissingScope) as refused:
        check.has_permission(Request(scopes.DEFAULT), Undeclared())
    assert refused.value.scope == "admin"
    assert check.has_permission(Request(["admin"]), Undeclared()) is True


def test_the_schema_documents_403_missing_scope_with_each_operations_scope(api):
    schema = json.loads(api.get(f"{API}/schema", {"format": "json"}).content)
    expected = {(API + re.sub(r"\?.*", "", path), method): scope for method, path, _, scope, _ in CALLS}
    templated = {}
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            if {"ApiKeyAuth": []} not in operation.get("security", []):
                assert "403" not in operation["responses"], (method, path)
                continue
            forbidden = operation["responses"].get("403")
            assert forbidden is not None, f"{method.upper()} {path}: no 403"
            examples = forbidden["content"]["application/json"]["examples"]
            values = [example["value"]["error"] for example in examples.values()]
            assert [v["code"] for v in values] == ["missing_scope"], (method, path)
            templated[(path, method)] = values[0]["scope"]
            assert values[0]["scope"] in forbidden["description"]
    # Each concrete call of the table, matched to its documented path.
    for (path, method), scope in expected.items():
        documented = [s for (p, m), s in templated.items()
                      if m == method and re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", p), path)]
        assert documented == [scope], (method, path, documented)
    error = schema["components"]["schemas"]["ApiError"]["properties"]["error"]["properties"]
    assert error["scope"]["enum"] == list(scopes.SCOPES)


# --- revocation, expiry and scope changes: the next request ------------------------------------

def _warm(client, row) -> None:
    """One admitted call, so the key's row is in the cache the change must invalidate."""
    assert client.get(f"{API}/recipients/{USER}").status_code == 200
    assert cache.get(api_key_key(row.prefix))


@pytest.mark.parametrize("how", ["save", "update"])
def test_revoking_a_key_refuses_its_next_request(world, how):
    row, client = new_key(world["app"], scopes.DEFAULT)
    _warm(client, row)
    if how == "save":
        row.revoked = True
        row.save()
    else:
        AppAPIKey.objects.filter(pk=row.pk).update(revoked=True)
    before = snapshot()
    r = client.post(f"{API}/notifications", SEND_BODY, format="json")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert snapshot() == before


@pytest.mark.parametrize("how", ["save", "update"])
def test_an_expiry_set_in_the_past_refuses_the_next_request(world, how):
    row, client = new_key(world["app"], scopes.DEFAULT)
    _warm(client, row)
    past = timezone.now() - timedelta(seconds=1)
    if how == "save":
        row.expiry_date = past
        row.save()
    else:
        AppAPIKey.objects.filter(pk=row.pk).update(expiry_date=past)
    r = client.get(f"{API}/recipients/{USER}")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_a_key_expiring_later_works_until_then(world):
    row, client = new_key(world["app"], scopes.DEFAULT)
    row.expiry_date = timezone.now() + timedelta(hours=1)
    row.save()
    assert client.get(f"{API}/recipients/{USER}").status_code == 200


@pytest.mark.parametrize("how", ["save", "update"])
def test_a_change_of_scopes_applies_from_the_next_request(world, how):
    row, client = new_key(world["app"], scopes.DEFAULT)
    _warm(client, row)

    def set_scopes(value):
        if how == "save":
            row.scopes = value
            row.save()
        else:
            AppAPIKey.objects.filter(pk=row.pk).update(scopes=value)

    set_scopes(["send"])
    r = client.get(f"{API}/recipients/{USER}")
    assert r.status_code == 403 and r.json()["error"]["scope"] == "recipients"
    set_scopes(["send", "recipients"])
    assert client.get(f"{API}/recipients/{USER}").status_code == 200


def test_the_cached_key_row_carries_the_scopes(world):
    """Checking a scope costs no query: it comes with the cached row the authentication reads."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    row, client = new_key(world["app"], ["analytics"])
    assert client.get(f"{API}/analytics").status_code == 200
    assert cache.get(api_key_key(row.prefix))["scopes"] == ["analytics"]
    with CaptureQueriesContext(connection) as queries:
        r = client.get(f"{API}/recipients/{USER}")
    assert r.status_code == 403
    assert len(queries) == 0, [q["sql"] for q in queries]


# --- the model, its default and the migration ----------------------------------------------------

def test_new_keys_get_every_scope_but_admin_unless_given(app_key):
    row = AppAPIKey.objects.get(app=app_key[0])  # made by devtools.demo.create_app, as the fixture's
    assert row.scopes == ["send", "recipients", "templates", "analytics"] == scopes.DEFAULT
    assert new_key(app_key[0], ["admin"])[0].scopes == ["admin"]


@pytest.mark.parametrize("bad", [["bogus"], ["send", "send"], "send"])
def test_unknown_or_repeated_scopes_are_refused_by_the_model(app_key, bad):
    with pytest.raises(ValidationError):
        AppAPIKey.objects.create_key(name="bad", app=app_key[0], scopes=bad)
    assert AppAPIKey.objects.filter(name="bad").count() == 0


def test_the_migration_gives_existing_keys_every_scope_but_admin():
    migration = importlib.import_module("notify.migrations.0009_api_key_scopes").Migration
    assert migration.dependencies == [("notify", "0008_analytics")]
    (operation,) = migration.operations
    assert operation.name == "scopes" and operation.field.default() == ["send", "recipients", "templates",
                                                                         "analytics"]


# --- the admin --------------------------------------------------------------------------------

@pytest.fixture
def admin_client(client, app_key):
    from django.contrib.auth.models import User

    User.objects.create_superuser("ops", "ops@example.com", "pw-for-tests-only")
    client.login(username="ops", password="pw-for-tests-only")
    return client


def test_the_admin_creates_a_key_with_its_scopes_and_shows_it_once(admin_client, app_key, world):
    page = admin_client.get("/admin/notify/appapikey/add/").content.decode()
    for name in scopes.SCOPES:
        assert f'value="{name}"' in page
    r = admin_client.post("/admin/notify/appapikey/add/", {"name": "reports", "app": app_key[0].pk,
                                                           "scopes": ["analytics"]}, follow=True)
    assert r.status_code == 200
    shown = [str(m) for m in r.context["messages"]]
    key = re.search(r"The API key for reports is: (\S+)\. ", " ".join(shown)).group(1)
    row = AppAPIKey.objects.get(name="reports")
    assert row.scopes == ["analytics"] and key.startswith(row.prefix + ".")
    # Shown once: the key's pages never show it again.
    assert key not in admin_client.get(f"/admin/notify/appapikey/{row.pk}/change/").content.decode()
    assert key not in admin_client.get("/admin/notify/appapikey/").content.decode()
    client = client_for(key)
    assert client.get(f"{API}/analytics").status_code == 200
    assert client.get(f"{API}/recipients/{USER}").json()["error"]["scope"] == "recipients"


def test_scopes_edited_in_the_admin_apply_to_the_next_request(admin_client, world):
    row, client = new_key(world["app"], ["analytics"])
    assert client.get(f"{API}/analytics").status_code == 200 and cache.get(api_key_key(row.prefix))
    r = admin_client.post(f"/admin/notify/appapikey/{row.pk}/change/", {
        "name": row.name, "app": row.app_id, "scopes": ["recipients"]})
    assert r.status_code == 302, r.content.decode()[:2000]
    assert client.get(f"{API}/recipients/{USER}").status_code == 200
    assert client.get(f"{API}/analytics").json()["error"]["scope"] == "analytics"
